"""SimCLR pre-training of one SSCL encoder on CMR frames, saved as a locked artifact.

Nakashima et al., *Interaction of a priori anatomic knowledge with self-supervised contrastive
learning in cardiac MRI*, sections 3.2 and 5.1: SimCLR with temperature 0.1 and Adam at lr 1e-4,
early stopping, on full or heart-masked ("segmented", section 3.1) short-axis frames.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch.utils.data import DataLoader

from alan.artifacts import load_artifact, save_artifact
from alan.data.cmr import CMRSlices, FrameDataset, GroundTruthMasks, MaskSource, load_cine_frames, load_slices
from alan.errors import AlanError, DataError
from alan.models.encoders import Encoder, create_encoder, encoder_from_artifact
from alan.models.simclr import SimCLR
from alan.records import Record
from alan.training import RunOptions, fit, run_folder
from alan.transforms.simclr_views import SimCLRViews

KIND = "sscl_encoder"
RUN_KIND = "simclr_run"

Log = Callable[[str], None]


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
        from alan.pipelines.sscl.masks import AlanMasks

        return AlanMasks.from_paths(backbone, head, list(models), batch_size=batch_size)
    raise AlanError(f"unknown mask source {kind!r}; expected gt or alan")


__all__ = ["KIND", "Log", "PretrainConfig", "Pretrained", "array_hash", "load_encoder_artifact", "make_mask_source",
           "pretrain", "pretrain_images"]
