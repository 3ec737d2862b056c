"""Weighted-kNN view classification on locked-backbone CLS features (ALAN Table 3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from alan.downstream.knn import WeightedKNN
from alan.errors import AlanError
from alan.models.backbones import FEATURES, GRID, view_features
from alan.metrics import accuracy, confusion_matrix, per_class_accuracy
from alan.records import Record

#: The paper's Table 3 (TMED-2, accuracy %): echo DINO k=2 and ImageNet DINO k=10.
PAPER_TABLE3 = {
    "echo DINO, k=2": {"A2C": 91.02, "A4C": 89.14, "PLAX": 95.01, "PSAX": 80.81, "overall": 90.78},
    "ImageNet DINO, k=10": {"overall": 90.30},
}


def record_frame(rec: Record) -> np.ndarray:
    """The frame a record contributes: the single image (TMED-2), else ED, else the middle frame."""
    frames = rec.frames
    idx = rec.ed if rec.ed is not None else len(frames) // 2
    if len(frames) == 1:
        idx = 0
    return np.asarray(frames[idx])


def cls_features(backbone: Any, records: Sequence[Record], batch_size: int = 64, progress: bool = False,
                 features: str = "cls", input_size: int | None = None) -> np.ndarray:
    """View features of one frame per record, (N, D) float32: the CLS token after the final norm
    (`features="cls"`, the ALAN paper's kNN), or (`"grid"`, beyond the paper) the patch tokens
    averaged over a 7 x 7 grid of the frame and concatenated (N, 49 D), which keeps where in
    the sector each kind of token lies. The frames go to the backbone at `input_size` px (a
    multiple of its patch size; None: the backbone's own size), through the backbone's own size
    first, as `alan.models.parcellator` feeds a recording's frames in `analyze`: a recording gets
    the features its bank was fitted on whatever its native size."""
    from alan.transforms.spatial import resize_unit, to_work

    if features not in FEATURES:
        raise AlanError(f"unknown view features {features!r}; expected one of {', '.join(FEATURES)}")
    native, size = backbone.config.img_size, _input_size(backbone, input_size)
    backbone.grid_at(size)  # a size off the patch grid is refused before any work
    feats = []
    with Progress(disable=not progress, transient=True) as bar, torch.no_grad():
        task = bar.add_task("view features", total=len(records))
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            frames = to_work([record_frame(r) for r in chunk], native)
            cls, tokens = backbone(resize_unit(frames, size), size)
            feats.append(view_features(cls, tokens, features).float().cpu().numpy())
            bar.advance(task, len(chunk))
    dim = backbone.embed_dim * (1 if features == "cls" else GRID * GRID)
    return np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)


def _input_size(backbone: Any, input_size: int | None = None) -> int:
    """The size (px) view features are taken at: `input_size`, or the backbone's own size for None."""
    return int(backbone.config.img_size if input_size is None else input_size)


def bank_features(knn: WeightedKNN) -> str:
    """The kind of view features ("cls", "grid") a view bank was fitted on."""
    return knn.provenance_.get("features", "cls")


def bank_input_size(knn: WeightedKNN) -> int | None:
    """The input size (px) a view bank's features were taken at; None for banks that do not record
    it (written before it was an option), whose features are at the backbone's own size."""
    size = knn.provenance_.get("input_size")
    return None if size is None else int(size)


def labelled(records: Sequence[Record]) -> list[Record]:
    out = [r for r in records if r.label is not None]
    if not out:
        raise AlanError("no labelled records to classify")
    return out


def fit_views(backbone: Any, records: Sequence[Record], k: int = 20, progress: bool = False,
              features: str = "cls", input_size: int | None = None) -> WeightedKNN:
    """A weighted-kNN bank of the records' view features (`cls_features`, frames at `input_size` px,
    None: the backbone's own size) and view labels; the kind and size are in its provenance."""
    recs = labelled(records)
    feats = cls_features(backbone, recs, progress=progress, features=features, input_size=input_size)
    provenance = {"backbone_hash": getattr(backbone, "hash", None), "features": features,
                  "input_size": _input_size(backbone, input_size)}
    return WeightedKNN(k=k).fit(feats, [r.label for r in recs], provenance=provenance)


def evaluate_views(knn: WeightedKNN, backbone: Any, records: Sequence[Record], ks: Sequence[int] = (2, 10, 20),
                   progress: bool = False) -> dict[str, Any]:
    """Per-class and overall accuracy for each k, plus the confusion matrix of each k, on the view
    features the bank was fitted on (its kind and input size)."""
    knn.check_provenance({"backbone_hash": getattr(backbone, "hash", None)})
    recs = labelled(records)
    feats = cls_features(backbone, recs, progress=progress, features=bank_features(knn),
                         input_size=bank_input_size(knn))
    truth = np.array([r.label for r in recs])
    classes = [str(c) for c in knn.classes_]
    out: dict[str, Any] = {"n_test": len(recs), "n_bank": int(len(knn.bank_)), "classes": classes, "by_k": {}}
    counts = np.bincount(knn.labels_, minlength=len(knn.classes_))
    majority = str(knn.classes_[int(np.argmax(counts))])  # the trivial baseline: the bank's commonest view
    out["majority"] = {"class": majority, "accuracy": accuracy(truth, np.full(len(truth), majority, dtype=object)),
                       "per_class": per_class_accuracy(truth, np.full(len(truth), majority, dtype=object), labels=classes)}
    original_k = knn.k
    try:
        for k in ks:
            knn.k = int(k)
            pred = knn.predict(feats)
            out["by_k"][str(k)] = {
                "accuracy": accuracy(truth, pred),
                "per_class": per_class_accuracy(truth, pred, labels=classes),
                "confusion": confusion_matrix(truth, pred, labels=classes).tolist(),
            }
    finally:
        knn.k = original_k
    return out
