"""SSCL with anatomic priors: SimCLR pre-training and the paper's evaluation grid.

SSCL paper (Nakashima et al.), sections 3 and 5; METHODS B. The grid crosses pre-training
{none, ImageNet, SSCL on full images, SSCL on segmented images} with the downstream input
{full, segmented}, for each encoder architecture, and reports macro one-vs-rest AUC.

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

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.utilities import rank_zero_only
from sklearn.model_selection import StratifiedGroupKFold, train_test_split
from torch.utils.data import DataLoader

from alan.artifacts import atomic_write_json, atomic_write_text, load_artifact, save_artifact
from alan.data.cmr import CMRSlices, FrameDataset, GroundTruthMasks, MaskSource, load_cine_frames, load_slices
from alan.downstream.classifier import EDESClassifier
from alan.metrics import macro_auc
from alan.errors import AlanError, ArtifactError, DataError
from alan.models.encoders import Encoder, create_encoder, encoder_from_artifact, fits, read_state_dict
from alan.models.simclr import SimCLR
from alan.records import Record
from alan.training import RunOptions, fit, run_folder
from alan.transforms.simclr_views import SimCLRViews

PRETRAININGS: tuple[str, ...] = ("none", "imagenet", "sscl-full", "sscl-segmented")
TITLES = {"none": "None", "imagenet": "ImageNet", "sscl-full": "Full-SSCL", "sscl-segmented": "Segmented-SSCL"}
INPUTS: tuple[str, ...] = ("full", "segmented")
KIND = "sscl_encoder"
RUN_KIND = "simclr_run"

#: The paper's ACDC AUCs (Tables 1 and 2; Table 3 re-arranges the SSCL columns).
PAPER_ACDC: dict[str, dict[str, dict[str, float]]] = {
    "vgg16": {
        "full": {"none": 0.542, "imagenet": 0.532, "sscl-full": 0.849, "sscl-segmented": 0.738},
        "segmented": {"none": 0.746, "imagenet": 0.814, "sscl-full": 0.890, "sscl-segmented": 0.901},
    },
    "densenet121": {
        "full": {"none": 0.574, "imagenet": 0.766, "sscl-full": 0.867, "sscl-segmented": 0.765},
        "segmented": {"none": 0.744, "imagenet": 0.890, "sscl-full": 0.888, "sscl-segmented": 0.878},
    },
}

Log = Callable[[str], None]


# =============================================================================== pre-training
@dataclass
class PretrainConfig:
    """What SimCLR learns (how it runs is `RunOptions`: epochs, batch size, devices ...).

    Paper: temperature 0.1, lr 1e-4, batch 64-256, early stopping. `views` are `SimCLRViews`
    keyword arguments (crop scale, contrast, flips, rotation)."""

    arch: str = "vgg16"
    input: str = "full"
    img_size: int = 224
    frames: str = "edes"  # "edes" or "all" (every cine frame)
    lr: float = 1e-4
    temperature: float = 0.1
    out_dim: int = 128
    patience: int = 10
    val_fraction: float = 0.1
    views: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _EpochLog(Callback):
    """Per-epoch train/val loss (kept in the artifact for the record)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        m = trainer.callback_metrics
        row = {"epoch": int(trainer.current_epoch)}
        for k in ("train_loss_epoch", "val_loss"):
            if k in m:
                row[k] = float(m[k])
        self.rows.append(row)


@dataclass
class Pretrained:
    encoder: Encoder
    hash: str | None
    path: Path | None
    config: dict[str, Any]


def array_hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def pretrain(images: np.ndarray, groups: Sequence[Any], cfg: PretrainConfig, opts: RunOptions,
             run_dir: str | Path, out_dir: str | Path | None = None, provenance: Mapping[str, Any] | None = None,
             log: Log | None = None) -> Pretrained:
    """SimCLR on uint8 frames (M, S, S) -> the encoder at the best validation loss, saved as a
    locked ``sscl_encoder`` artifact in `out_dir` (if given). `groups` (patients, one per frame)
    keep the early-stopping split patient-disjoint."""
    images = np.asarray(images)
    groups = np.asarray(groups)
    if images.ndim != 3 or len(images) != len(groups):
        raise ValueError(f"images must be (M, S, S) with one group each, got {images.shape} / {len(groups)}")
    rng = np.random.default_rng(opts.seed)
    patients = np.unique(groups)
    if len(patients) < 2:
        raise DataError(None, "SimCLR pre-training needs images of at least two patients (validation split)")
    n_val = min(len(patients) - 1, max(1, int(round(cfg.val_fraction * len(patients)))))
    val_p = set(rng.permutation(patients)[:n_val].tolist())
    is_val = np.array([g in val_p for g in groups])
    train, val = images[~is_val], images[is_val]
    bs = max(2, min(opts.batch_size, len(train)))
    encoder = create_encoder(cfg.arch, img_size=cfg.img_size, seed=opts.seed)
    torch.manual_seed(opts.seed)  # the projection head's init must not depend on what ran before in the process
    module = SimCLR(encoder, SimCLRViews(**cfg.views), lr=cfg.lr, temperature=cfg.temperature, out_dim=cfg.out_dim)
    epochs = _EpochLog()
    gen = torch.Generator().manual_seed(opts.seed)
    train_dl = DataLoader(FrameDataset(train), batch_size=bs, shuffle=True, drop_last=len(train) >= 2 * bs,
                          num_workers=opts.num_workers, generator=gen)
    val_dl = DataLoader(FrameDataset(val), batch_size=max(2, min(bs, len(val))), num_workers=opts.num_workers)
    if log:
        log(f"SimCLR {cfg.arch} on {cfg.input} images: {len(train)} train / {len(val)} val frames, "
            f"{cfg.img_size} px, batch {bs}, up to {opts.max_epochs} epochs")
    t0 = time.perf_counter()
    with run_folder(run_dir, RUN_KIND):  # a failure before the first checkpoint leaves no run folder
        trainer = fit(module, opts, run_dir, train_dataloaders=train_dl, val_dataloaders=val_dl,
                      callbacks=[EarlyStopping("val_loss", patience=cfg.patience, mode="min"), epochs], kind=RUN_KIND)
    seconds = time.perf_counter() - t0
    enc = module.best_encoder().eval()
    enc.config.init = "sscl"
    config = {
        "kind": KIND,
        "encoder": enc.config.to_dict(),
        "pretraining": {**cfg.to_dict(), "views_resolved": SimCLRViews(**cfg.views).config(), "batch_size": bs,
                        "best_val_loss": module.best_val_loss, "best_epoch": module.best_epoch,
                        "epochs_run": int(trainer.current_epoch), "history": epochs.rows},
        "data": {**dict(provenance or {}), "n_train": int(len(train)), "n_val": int(len(val)),
                 "images_hash": array_hash(images)},
        "run": opts.to_dict(),
        "run_info": {"seconds": round(seconds, 1),  # wall-clock: not part of the hash
                     "views_per_s": round(2 * len(train) * max(1, trainer.current_epoch) / max(seconds, 1e-9), 1)},
    }
    h, path = None, None
    if out_dir is not None and trainer.is_global_zero:
        path = Path(out_dir)
        h = save_artifact(path, enc.state(), config)
        enc.hash = h
    return Pretrained(enc, h, path, {**config, "hash": h})


def pretrain_images(records: Sequence[Record], cfg: PretrainConfig, mask_source: MaskSource | None = None,
                    margin: int = 0, slices: CMRSlices | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The frames SimCLR trains on, (M, S, S) uint8, and their patients (M,)."""
    if cfg.frames == "edes":
        if slices is None:
            slices = load_slices(records, cfg.img_size, mask_source if cfg.input == "segmented" else None, margin)
        x = slices.images(cfg.input)
        return x.reshape(-1, *x.shape[-2:]), np.repeat(slices.patients, x.shape[1])
    if cfg.frames != "all":
        raise AlanError(f"frames must be edes or all, got {cfg.frames!r}")
    xs, gs = [], []
    for r in records:
        f = load_cine_frames([r], cfg.img_size, cfg.input, mask_source, margin)
        xs.append(f)
        gs.extend([r.patient or r.id] * len(f))
    return np.concatenate(xs), np.asarray(gs, dtype=object)


def load_encoder_artifact(path: str | Path) -> Pretrained:
    tensors, config = load_artifact(path, kind=KIND)
    enc = encoder_from_artifact(tensors, config).eval()
    return Pretrained(enc, config.get("hash"), Path(path), config)


def make_mask_source(kind: str = "gt", backbone: str | Path | None = None, head: str | Path | None = None,
                     models: Sequence[str | Path] = (), batch_size: int = 32) -> MaskSource:
    """The heart-mask source by name: "gt" (dataset annotations) or "alan" (backbone + head + P2S files)."""
    if kind == "gt":
        return GroundTruthMasks()
    if kind == "alan":
        if backbone is None or head is None or not models:
            raise AlanError("the alan mask source needs --alan-backbone, --alan-head and at least one --alan-p2s")
        from alan.data.cmr import AlanMasks

        return AlanMasks.from_paths(backbone, head, list(models), batch_size=batch_size)
    raise AlanError(f"unknown mask source {kind!r}; expected gt or alan")


# =============================================================================== splits and CV
def patient_split(patients: Sequence[Any], labels: Sequence[Any], test_size: float = 0.3,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Patient-level stratified split of slices: (train_idx, test_idx), no patient in both."""
    patients, labels = np.asarray(patients), np.asarray(labels)
    uniq, first = np.unique(patients, return_index=True)
    plabel = labels[first]
    for p, lab in zip(uniq, plabel):
        if (labels[patients == p] != lab).any():
            raise DataError(None, f"patient {p} has slices with different labels")
    counts = {c: int((plabel == c).sum()) for c in np.unique(plabel)}
    if min(counts.values()) < 2:
        raise DataError(None, f"a stratified patient split needs >= 2 patients per class, got {counts}")
    # tiny datasets: at least one test patient per class (more than test_size of them if need be)
    n_test = min(max(int(np.ceil(test_size * len(uniq))), len(counts)), len(uniq) - len(counts))
    tr_p, te_p = train_test_split(uniq, test_size=n_test, stratify=plabel, random_state=seed)
    te = np.isin(patients, te_p)
    return np.flatnonzero(~te), np.flatnonzero(te)


def aggregate(proba: np.ndarray, y: np.ndarray, groups: np.ndarray, level: str) -> tuple[np.ndarray, np.ndarray]:
    """Slice probabilities -> (labels, probabilities) at `level` ("slice" or "patient": mean per patient)."""
    if level == "slice":
        return y, proba
    if level != "patient":
        raise AlanError(f"level must be slice or patient, got {level!r}")
    uniq, inv = np.unique(groups, return_inverse=True)
    p = np.zeros((len(uniq), proba.shape[1]))
    np.add.at(p, inv, proba)
    p /= np.bincount(inv, minlength=len(uniq))[:, None]
    first = np.zeros(len(uniq), np.int64)
    first[inv[::-1]] = np.arange(len(inv))[::-1]
    return y[first], p


def score(clf: EDESClassifier, feats: np.ndarray, y: np.ndarray, groups: np.ndarray, level: str) -> float:
    proba = clf.predict_proba_features(feats)
    yy, pp = aggregate(proba, y, groups, level)
    return macro_auc(yy, pp, clf.classes_, absent="skip")


def select_hyperparameters(feats: np.ndarray, y: np.ndarray, groups: np.ndarray, base: EDESClassifier,
                           lrs: Sequence[float], batch_sizes: Sequence[int], folds: int, level: str,
                           seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid over (lr, batch size) by stratified group K-fold on the training part only."""
    n_groups = len(np.unique(groups))
    k = max(2, min(folds, n_groups))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    splits = list(cv.split(np.zeros(len(y)), y, groups))
    rows = []
    for lr in lrs:
        for bs in batch_sizes:
            aucs = []
            for tr, va in splits:
                clf = replace_params(base, lr=lr, batch_size=bs).fit_features(feats[tr], y[tr], groups[tr])
                aucs.append(score(clf, feats[va], y[va], groups[va], level))
            rows.append({"lr": lr, "batch_size": bs, "cv_auc": float(np.nanmean(aucs)) if not np.all(np.isnan(aucs))
                         else float("nan")})
    ok = [r for r in rows if not np.isnan(r["cv_auc"])]
    best = max(ok, key=lambda r: r["cv_auc"]) if ok else rows[0]
    return {"lr": best["lr"], "batch_size": best["batch_size"]}, rows


def replace_params(est: EDESClassifier, **params: Any) -> EDESClassifier:
    from sklearn.base import clone

    return clone(est).set_params(**params)


# =============================================================================== the grid
@dataclass
class GridConfig:
    """The grid: what is crossed, how the classifier is chosen and how SimCLR pre-trains."""

    archs: tuple[str, ...] = ("vgg16", "densenet121")
    pretrainings: tuple[str, ...] = PRETRAININGS
    inputs: tuple[str, ...] = INPUTS
    img_size: int = 224
    imagenet_weights: dict[str, str] = field(default_factory=dict)
    margin: int = 0
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    test_size: float = 0.3
    cv_folds: int = 3
    lrs: tuple[float, ...] = (1e-3, 1e-2)
    batch_sizes: tuple[int, ...] = (16, 64)
    max_epochs: int = 300
    patience: int = 20
    val_fraction: float = 0.2
    finetune: bool = False
    level: str = "patient"
    pretrain_frames: str = "edes"
    pretrain_lr: float = 1e-4
    pretrain_patience: int = 10
    pretrain_views: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def tiny(cls, **overrides: Any) -> GridConfig:
        """CPU-sized: small members of both families at 64 px, a higher SimCLR lr for short runs."""
        base = dict(archs=("vgg_tiny", "densenet_tiny"), img_size=64, seeds=(0, 1, 2), cv_folds=3,
                    lrs=(1e-3, 1e-2), batch_sizes=(16, 64), max_epochs=300, patience=20, pretrain_lr=1e-3,
                    pretrain_patience=5)
        base.update(overrides)
        return cls(**base)


def match_imagenet_weights(archs: Sequence[str], files: Sequence[str | Path]) -> dict[str, str]:
    """Assign weights files to archs: ``ARCH=FILE`` explicitly, else by which trunk the file fits."""
    out: dict[str, str] = {}
    for f in files:
        f = str(f)
        if "=" in f and f.split("=", 1)[0] in archs:
            arch, path = f.split("=", 1)
            out[arch] = path
            continue
        state = read_state_dict(f)  # one read; a missing or unreadable file is its own one-line error
        hits = [a for a in archs if a not in out and fits(a, f, state)]
        if not hits:
            raise DataError(f, f"fits none of the encoders {', '.join(archs)} (use ARCH=FILE to say which)")
        out[hits[0]] = f
    return out


def _is_real_acdc(dataset: Any) -> bool:
    if getattr(dataset, "format", None) != "acdc":
        return False
    root = Path(getattr(dataset, "root", "."))
    return not any((root / m).exists() for m in ("PHANTOM.json", "phantom.json", "PHANTOM"))


def _pool(records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    labelled = [r for r in records if r.label is not None]
    if any(r.split == "train" for r in labelled):
        return [r for r in labelled if r.split == "train"], [r for r in labelled if r.split == "test"]
    return labelled, []


def _none_msg(arch: str) -> str:
    return (f"ImageNet condition skipped for {arch}: no weights file given "
            f"(pass --imagenet-weights FILE; nothing is downloaded)")


def run_grid(dataset: Any, cfg: GridConfig, opts: RunOptions | None = None, out_dir: str | Path = "sscl-grid",
             mask_source: MaskSource | None = None, log: Log | None = None, reuse: bool = True) -> dict[str, Any]:
    """Run the paper's grid on a `Dataset` (or a list of Records); write grid.json, tables.txt and
    convergence.png under `out_dir` and return the results (see module docstring)."""
    opts = opts or RunOptions()
    with _quiet_lightning(not opts.progress):
        return _run_grid(dataset, cfg, opts, out_dir, mask_source, log, reuse)


@contextlib.contextmanager
def _quiet_lightning(quiet: bool) -> Any:
    """Lightning's per-fit INFO lines (GPU available, ...) off while the grid runs without progress."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run_grid(dataset: Any, cfg: GridConfig, opts: RunOptions, out_dir: str | Path, mask_source: MaskSource | None,
              log: Log | None, reuse: bool) -> dict[str, Any]:
    log = log or (lambda s: None)
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    records = list(getattr(dataset, "records", dataset))
    pool, external = _pool(records)
    if not pool:
        raise DataError(getattr(dataset, "root", None), "no labelled records for the SSCL grid")
    mask_source = mask_source or GroundTruthMasks()
    log(f"loading {len(pool)} slices ({len({r.patient for r in pool})} patients) at {cfg.img_size} px, "
        f"masks from {mask_source.name}" + (f", {len(external)} external test slices" if external else ""))
    data = load_slices(pool, cfg.img_size, mask_source, cfg.margin)
    ext = load_slices(external, cfg.img_size, mask_source, cfg.margin) if external else None
    y, groups = data.labels.astype(str), data.patients.astype(str)
    classes = sorted(set(y))
    provenance = {"root": str(getattr(dataset, "root", "")), "format": getattr(dataset, "format", None),
                  "n_slices": len(data), "n_patients": int(len(np.unique(groups))), "mask": data.mask_config,
                  "margin": cfg.margin}
    splits = {s: patient_split(groups, y, cfg.test_size, s) for s in cfg.seeds}
    base = EDESClassifier(finetune=cfg.finetune, max_epochs=cfg.max_epochs, patience=cfg.patience,
                          val_fraction=cfg.val_fraction)
    result: dict[str, Any] = {
        "auc": {}, "std": {}, "external_auc": {}, "external_std": {}, "details": {}, "curves": {}, "encoders": {},
        "skipped": {}, "classes": classes, "config": cfg.to_dict(), "run": opts.to_dict(),
        "data": {**provenance, "n_external_slices": len(ext) if ext is not None else 0,
                 "n_external_patients": int(len(np.unique(ext.patients))) if ext is not None else 0,
                 "class_counts_patients": {c: int(len(np.unique(groups[y == c]))) for c in classes},
                 "n_test_patients": int(len(np.unique(groups[splits[cfg.seeds[0]][1]]))),
                 "skipped_slices": data.skipped},
        "paper": PAPER_ACDC if _is_real_acdc(dataset) else None,
    }
    for arch in cfg.archs:
        for key in ("auc", "std", "external_auc", "external_std", "details", "curves", "encoders", "skipped"):
            result[key][arch] = {}
        for pre in cfg.pretrainings:
            t0 = time.perf_counter()
            enc = _encoder_for(arch, pre, cfg, opts, data, pool, mask_source, out_dir, provenance, log, reuse)
            if isinstance(enc, str):
                log(enc)
                result["skipped"][arch][pre] = enc
                continue
            result["encoders"][arch][pre] = {"hash": enc.hash, "init": enc.encoder.config.init,
                                             "path": str(enc.path) if enc.path else None,
                                             "pretrain_s": round(time.perf_counter() - t0, 1)}
            for inp in cfg.inputs:
                cell = _evaluate(enc.encoder, data, ext, inp, y, groups, splits, base, cfg)
                for key, val in (("auc", cell["mean"]), ("std", cell["std"]), ("external_auc", cell["external_mean"]),
                                 ("external_std", cell["external_std"])):
                    result[key][arch].setdefault(pre, {})[inp] = val
                result["curves"][arch].setdefault(pre, {})[inp] = cell.pop("curve")
                result["details"][arch].setdefault(pre, {})[inp] = cell
                ext_txt = f", external {cell['external_mean']:.3f}" if cell["external_mean"] is not None else ""
                log(f"{arch:>13} {TITLES.get(pre, pre):>15} x {inp:<9} AUC {cell['mean']:.3f} +- {cell['std']:.3f}"
                    f"{ext_txt}")
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    if rank_zero_only.rank != 0:  # under DDP every process runs the grid; one writes it
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "grid.json", _jsonable(result))
    atomic_write_text(out_dir / "tables.txt", format_tables(result))
    try:
        plot_convergence(result, out_dir / "convergence.png")
        result["figure"] = str(out_dir / "convergence.png")
    except Exception as e:  # noqa: BLE001 - a figure must not lose the numbers
        log(f"convergence plot not written: {e}")
    return result


def _encoder_for(arch: str, pre: str, cfg: GridConfig, opts: RunOptions, data: CMRSlices, pool: Sequence[Record],
                 mask_source: MaskSource, out_dir: Path, provenance: Mapping[str, Any], log: Log,
                 reuse: bool) -> Pretrained | str:
    if pre == "none":
        enc = create_encoder(arch, img_size=cfg.img_size, seed=opts.seed).eval()
        return Pretrained(enc, None, None, {})
    if pre == "imagenet":
        path = cfg.imagenet_weights.get(arch)
        if not path:
            return _none_msg(arch)
        enc = create_encoder(arch, img_size=cfg.img_size, imagenet_weights=path).eval()
        return Pretrained(enc, enc.config.init.split(":", 1)[1], Path(path), {})
    if pre not in ("sscl-full", "sscl-segmented"):
        raise AlanError(f"unknown pre-training {pre!r}; expected one of {', '.join(PRETRAININGS)}")
    inp = pre.split("-", 1)[1]
    pcfg = PretrainConfig(arch=arch, input=inp, img_size=cfg.img_size, frames=cfg.pretrain_frames, lr=cfg.pretrain_lr,
                          patience=cfg.pretrain_patience, views=dict(cfg.pretrain_views))
    images, patients = pretrain_images(pool, pcfg, mask_source, cfg.margin, slices=data)
    art = out_dir / "encoders" / f"{arch}-{pre}"
    want = {"pretraining": pcfg.to_dict(), "images_hash": array_hash(images), "run": _run_key(opts)}
    if reuse and (art / "config.json").is_file():
        try:
            got = load_encoder_artifact(art)
            have = {"pretraining": {k: got.config["pretraining"].get(k) for k in pcfg.to_dict()},
                    "images_hash": got.config["data"].get("images_hash"), "run": _run_key(got.config.get("run", {}))}
            if json.dumps(have, sort_keys=True, default=str) == json.dumps(want, sort_keys=True, default=str):
                log(f"reusing {art} (hash {got.hash})")
                return got
            log(f"{art} was made with other settings or data: pre-training again")
        except ArtifactError as e:
            log(f"{art} unusable ({e}): pre-training again")
    run_dir = out_dir / "runs" / f"{arch}-{pre}"
    return pretrain(images, patients, pcfg, opts, run_dir, art, provenance, log)


def _run_key(opts: RunOptions | Mapping[str, Any]) -> dict[str, Any]:
    d = opts.to_dict() if isinstance(opts, RunOptions) else dict(opts)
    return {k: d.get(k) for k in ("max_epochs", "max_steps", "batch_size", "seed", "precision")}


def _evaluate(encoder: Encoder, data: CMRSlices, ext: CMRSlices | None, inp: str, y: np.ndarray, groups: np.ndarray,
              splits: Mapping[int, tuple[np.ndarray, np.ndarray]], base: EDESClassifier,
              cfg: GridConfig) -> dict[str, Any]:
    """One grid cell: AUC over seeds (CV-selected lr/batch on each training part)."""
    x = data.images(inp)
    x_ext = ext.images(inp) if ext is not None else None
    y_ext = ext.labels.astype(str) if ext is not None else None
    g_ext = ext.patients.astype(str) if ext is not None else None
    per_seed, per_seed_slice, ext_scores, hypers, curve = [], [], [], [], {}
    if not cfg.finetune:
        clf0 = replace_params(base, encoder_ed=encoder)
        feats = clf0.transform(x)
        feats_ext = clf0.transform(x_ext) if x_ext is not None else None
    for i, (seed, (tr, te)) in enumerate(splits.items()):
        if cfg.finetune:
            hp = {"lr": cfg.lrs[0], "batch_size": cfg.batch_sizes[0]}  # CV of end-to-end runs: see docs
            clf = replace_params(base, encoder_ed=encoder, seed=seed, **hp)
            clf.fit(x[tr], y[tr], groups[tr], eval_set=(x[te], y[te]) if i == 0 else None)
            proba = clf.predict_proba(x[te])
            proba_ext = clf.predict_proba(x_ext) if x_ext is not None else None
        else:
            hp, _rows = select_hyperparameters(feats[tr], y[tr], groups[tr], replace_params(base, seed=seed), cfg.lrs,
                                               cfg.batch_sizes, cfg.cv_folds, cfg.level, seed)
            clf = replace_params(base, seed=seed, **hp)
            clf.fit_features(feats[tr], y[tr], groups[tr], eval_set=(feats[te], y[te]) if i == 0 else None)
            proba = clf.predict_proba_features(feats[te])
            proba_ext = clf.predict_proba_features(feats_ext) if feats_ext is not None else None
        hypers.append(hp)
        yy, pp = aggregate(proba, y[te], groups[te], cfg.level)
        per_seed.append(macro_auc(yy, pp, clf.classes_, absent="skip"))
        per_seed_slice.append(macro_auc(y[te], proba, clf.classes_, absent="skip"))
        if proba_ext is not None:
            ye, pe = aggregate(proba_ext, y_ext, g_ext, cfg.level)
            ext_scores.append(macro_auc(ye, pe, clf.classes_, absent="skip"))
        if i == 0:
            curve = {"train_loss": [h["train_loss"] for h in clf.history_],
                     "val_loss": [h.get("val_loss") for h in clf.history_],
                     "test_auc": [h.get("eval_auc") for h in clf.history_], "seed": seed, **hp}

    def ms(v: list[float]) -> tuple[float | None, float | None]:
        a = np.asarray(v, float)
        if not len(a) or np.all(np.isnan(a)):
            return None, None
        return float(np.nanmean(a)), float(np.nanstd(a))

    mean, std = ms(per_seed)
    emean, estd = ms(ext_scores)
    return {"mean": mean, "std": std, "per_seed": per_seed, "slice_auc": per_seed_slice, "slice_mean": ms(per_seed_slice)[0],
            "external_mean": emean, "external_std": estd, "external_per_seed": ext_scores, "hyper": hypers,
            "curve": curve}


# =============================================================================== reporting
def _cell(result: Mapping[str, Any], arch: str, pre: str, inp: str, key: str = "auc") -> str:
    skipped = result.get("skipped", {}).get(arch, {}).get(pre)
    if skipped:
        return "skipped"
    mean = result.get(key, {}).get(arch, {}).get(pre, {}).get(inp)
    if mean is None:
        return "-"
    std = result.get(key.replace("auc", "std"), {}).get(arch, {}).get(pre, {}).get(inp)
    txt = f"{mean:.3f}" + (f"±{std:.3f}" if std is not None else "")
    paper = (result.get("paper") or {}).get(arch, {}).get(inp, {}).get(pre)
    if paper is not None and key == "auc":
        txt += f" (paper {paper:.3f})"
    return txt


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def format_tables(result: Mapping[str, Any]) -> str:
    """The paper's three tables (mean±std over seeds; the paper's ACDC numbers beside ours when the
    data is ACDC), plus the same for the external test set when there is one."""
    archs = list(result["auc"])
    pres = [p for p in PRETRAININGS if any(p in result["auc"][a] or p in result["skipped"].get(a, {}) for a in archs)]
    level = result["config"]["level"]
    out = []
    keys = [("auc", f"held-out 30% of the pool, {level}-level macro AUC")]
    if result["data"].get("n_external_slices"):
        keys.append(("external_auc", f"external test split ({result['data']['n_external_patients']} patients), "
                                     f"{level}-level macro AUC"))
    for key, what in keys:
        tag = "" if key == "auc" else " [external]"
        for n, inp in ((1, "full"), (2, "segmented")):
            if inp not in result["config"]["inputs"]:
                continue
            out.append(_table(f"Table {n}{tag}: AUCs of models trained on {inp} images ({what})",
                              ["Model", *(TITLES[p] for p in pres)],
                              [[a, *(_cell(result, a, p, inp, key) for p in pres)] for a in archs]))
            out.append("")
        combos = [(p, i) for p in ("sscl-full", "sscl-segmented") for i in ("full", "segmented")
                  if p in pres and i in result["config"]["inputs"]]
        if combos:
            out.append(_table(f"Table 3{tag}: pre-training-downstream input ({what})",
                              ["Model", *(f"{p.split('-')[1].title()}-{i.title()}" for p, i in combos)],
                              [[a, *(_cell(result, a, p, i, key) for p, i in combos)] for a in archs]))
            out.append("")
    skipped = sorted({m for a in archs for m in result["skipped"].get(a, {}).values()})
    out.extend(f"note: {m}" for m in skipped)
    if result.get("paper") is None:
        out.append("note: the paper's numbers (real ACDC) are shown only when the data is real ACDC")
    return "\n".join(out).rstrip() + "\n"


def plot_convergence(result: Mapping[str, Any], path: str | Path) -> Path:
    """Figure 1: downstream training curves (first seed) per pre-training; solid = full input,
    dashed = segmented input. Top: training loss; bottom: held-out macro AUC per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(result["curves"])
    fig, axes = plt.subplots(2, len(archs), figsize=(5 * len(archs), 6.5), squeeze=False, sharex="col")
    colors = {"none": "tab:gray", "imagenet": "tab:orange", "sscl-full": "tab:blue", "sscl-segmented": "tab:green"}
    for j, arch in enumerate(archs):
        for pre, by_inp in result["curves"][arch].items():
            for inp, c in by_inp.items():
                style = "-" if inp == "full" else "--"
                lab = f"{TITLES.get(pre, pre)} / {inp}"
                axes[0, j].plot(c["train_loss"], style, color=colors.get(pre), label=lab)
                auc = [np.nan if v is None else v for v in c["test_auc"]]
                axes[1, j].plot(auc, style, color=colors.get(pre), label=lab)
        axes[0, j].set_title(arch)
        axes[0, j].set_ylabel("training loss")
        axes[1, j].set_ylabel("held-out macro AUC (slices)")
        axes[1, j].set_xlabel("epoch")
        axes[1, j].set_ylim(0.4, 1.0)
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("Convergence of pre-trained models for downstream classification")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def demo_grid(data: str | Path, out_dir: str | Path, quick: bool = False, seed: int = 0, progress: bool = False,
              log: Log | None = None) -> dict[str, Any]:
    """The grid as `alan demo` runs it on the ACDC phantom: the small members of both encoder
    families, 4 SimCLR epochs, 2 seeds, 48 px (32 px and one seed with `quick`). Returns the --json
    summary plus ``tables`` (text) and ``figures`` (paths)."""
    from alan.data import open_dataset

    dataset = open_dataset(data, "acdc")
    if quick:
        cfg = GridConfig.tiny(img_size=32, seeds=(0,), cv_folds=2, lrs=(1e-2,), batch_sizes=(16,), max_epochs=100)
        opts = RunOptions(max_epochs=1, batch_size=32, seed=seed, progress=progress, accelerator="cpu", devices=1,
                          checkpoint_every_n_steps=None)
    else:
        cfg = GridConfig.tiny(img_size=48, seeds=(0, 1), pretrain_patience=3)
        opts = RunOptions(max_epochs=4, batch_size=64, seed=seed, progress=progress, accelerator="cpu", devices=1,
                          checkpoint_every_n_steps=None)
    res = run_grid(dataset, cfg, opts, out_dir, log=log)
    return {**summary_json(res), "tables": format_tables(res), "figures": [res["figure"]] if "figure" in res else []}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if np.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def summary_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """The CLI's --json document: ``auc[arch][pretraining][input]`` = mean, plus std and context."""
    keep = ("auc", "std", "external_auc", "external_std", "skipped", "classes", "data", "encoders", "seconds",
            "config", "paper")
    return _jsonable({k: result[k] for k in keep if k in result})


__all__ = ["GridConfig", "INPUTS", "PAPER_ACDC", "demo_grid", "make_mask_source", "PRETRAININGS", "PretrainConfig", "Pretrained", "aggregate",
           "format_tables", "load_encoder_artifact", "match_imagenet_weights", "patient_split", "plot_convergence",
           "pretrain", "pretrain_images", "run_grid", "select_hyperparameters", "summary_json"]
