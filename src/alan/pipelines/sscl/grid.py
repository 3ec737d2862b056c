"""The paper's evaluation grid: pre-training x downstream input x encoder, macro AUC over seeds.

Nakashima et al., *Interaction of a priori anatomic knowledge with self-supervised contrastive
learning in cardiac MRI*, section 5 (Tables 1-3, Figure 1); the protocol is described in
`alan.pipelines.sscl`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_only

from alan.artifacts import atomic_write_json, atomic_write_text, finite_json
from alan.data.cmr import CMRSlices, GroundTruthMasks, MaskSource, load_slices
from alan.downstream.classifier import EDESClassifier
from alan.errors import AlanError, ArtifactError, DataError
from alan.metrics import macro_auc
from alan.models.encoders import Encoder, create_encoder, fits, read_state_dict
from alan.pipelines.sscl.pretraining import (Log, PretrainConfig, Pretrained, array_hash, load_encoder_artifact,
                                             pretrain, pretrain_images)
from alan.pipelines.sscl.splits import aggregate, patient_split, replace_params, select_hyperparameters
from alan.records import Record
from alan.reports.sscl import TITLES, format_tables, plot_convergence
from alan.training import RunOptions

PRETRAININGS: tuple[str, ...] = ("none", "imagenet", "sscl-full", "sscl-segmented")
INPUTS: tuple[str, ...] = ("full", "segmented")

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
    atomic_write_json(out_dir / "grid.json", result)
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


def summary_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """The CLI's --json document: ``auc[arch][pretraining][input]`` = mean, plus std and context."""
    keep = ("auc", "std", "external_auc", "external_std", "skipped", "classes", "data", "encoders", "seconds",
            "config", "paper")
    return finite_json({k: result[k] for k in keep if k in result})


__all__ = ["GridConfig", "INPUTS", "PAPER_ACDC", "PRETRAININGS", "match_imagenet_weights", "run_grid", "summary_json"]
