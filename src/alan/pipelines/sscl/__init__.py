"""SSCL with anatomic priors: SimCLR pre-training and the paper's evaluation grid.

Nakashima et al., *Interaction of a priori anatomic knowledge with self-supervised contrastive
learning in cardiac MRI*, sections 3 and 5. The grid crosses pre-training {none, ImageNet, SSCL
on full images, SSCL on segmented images} with the downstream input {full, segmented}, for each
encoder architecture, and reports macro one-vs-rest AUC.

    pretraining.py  SimCLR on CMR frames -> a locked encoder artifact; the heart-mask sources
    splits.py       patient-level splits, per-patient aggregation, cross-validated classifier settings
    grid.py         the grid itself (`run_grid`) and its --json summary
    alan.reports.sscl  the paper's Tables 1-3 as text and Figure 1

Protocol (what the paper says, and the choices it leaves open, made here):
- Downstream pool: the dataset's "train" split (ACDC: the 100 training patients); when no record
  has that split, every labelled record. A dataset "test" split with labels is an *external* test
  set, scored with the same fitted classifiers (on the phantom with `--broken-test`, that is the
  set where the planted shortcut is broken).
- Per seed: a patient-level stratified 70/30 split of the pool; the learning rate and batch size
  of the classifier are chosen by stratified group K-fold cross-validation on the 70% only; the
  chosen setting is refitted on the 70% (early stopping on a patient-disjoint part of it) and
  scored on the 30%. Mean +- std over seeds. The same split per seed for every condition.
- AUC level: one ACDC diagnosis belongs to a patient, so by default slice probabilities are
  averaged per patient and the AUC is over patients (`level="patient"`); `level="slice"` scores
  slices. Both are stored.
- SimCLR sees images only (no labels), from the downstream pool, ED and ES frames (or every cine
  frame): the test parts of the splits contribute unlabelled images, as in a transductive SSL
  setting; the external test set is never used for pre-training. One encoder is pre-trained per
  (architecture, input) on ED and ES frames together and initialises both the ED and the ES
  branch. Early stopping on a patient-disjoint validation split of the pre-training images.
- "none" is a randomly initialised encoder (seeded); with frozen encoders (the default) that is a
  linear probe of random features, with `finetune=True` end-to-end training from scratch.
"""

from alan.pipelines.sscl.grid import INPUTS, PAPER_ACDC, PRETRAININGS, GridConfig, match_imagenet_weights, run_grid, summary_json
from alan.pipelines.sscl.pretraining import (KIND, PretrainConfig, Pretrained, array_hash, load_encoder_artifact,
                                             make_mask_source, pretrain, pretrain_images)
from alan.pipelines.sscl.splits import aggregate, patient_split, replace_params, score, select_hyperparameters
from alan.reports.sscl import TITLES, format_tables, plot_convergence

__all__ = ["GridConfig", "INPUTS", "KIND", "PAPER_ACDC", "PRETRAININGS", "PretrainConfig", "Pretrained", "TITLES",
           "aggregate", "array_hash", "format_tables", "load_encoder_artifact", "make_mask_source",
           "match_imagenet_weights", "patient_split", "plot_convergence", "pretrain", "pretrain_images",
           "replace_params", "run_grid", "score", "select_hyperparameters", "summary_json"]
