"""One Lightning `Trainer` factory for every training command (DINO, RAPTOR, SimCLR).

Scale-out is Lightning's: `accelerator`, `devices`, `num_nodes` and `strategy` go straight to
`lightning.Trainer`, so one machine with N GPUs, torchrun and SLURM all work as Lightning
documents; nothing here is a distributed layer of its own. A run folder holds
``checkpoints/last.ckpt`` (saved every `checkpoint_every_n_steps` and at each epoch end) and
``logs/`` (CSV, optionally TensorBoard); ``resume=True`` continues from ``last.ckpt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from alan.errors import AlanError
from alan.step_estimate import StepTimeEstimate


@dataclass
class RunOptions:
    """How to run a training job (not what to learn: that belongs to each module's config)."""

    max_epochs: int = 10
    max_steps: int = -1
    batch_size: int = 32
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: str | int = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    num_workers: int = 0
    seed: int = 0
    resume: bool = False
    progress: bool = True
    loggers: Sequence[str] = field(default_factory=lambda: ("csv",))
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int | None = 50
    gradient_clip_val: float | None = None
    sync_batchnorm: bool | None = None  # None: on for multi-GPU runs (torch's SyncBatchNorm has no CPU kernel)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def last_checkpoint(run_dir: str | Path) -> Path | None:
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def keep_earlier_logs(log_dir: Path) -> None:
    """Move an interrupted run's ``metrics.csv`` to ``metrics.partN.csv``: Lightning's CSV logger
    would otherwise overwrite it when the resumed run starts logging."""
    current = log_dir / "metrics.csv"
    if current.is_file():
        n = len(list(log_dir.glob("metrics.part*.csv"))) + 1
        current.rename(log_dir / f"metrics.part{n}.csv")


def make_trainer(opts: RunOptions, run_dir: str | Path, callbacks: Sequence[Callback] = (), **overrides: Any) -> L.Trainer:
    """A `lightning.Trainer` configured from `opts`, logging and checkpointing under `run_dir`."""
    run_dir = Path(run_dir)
    loggers = []
    for name in opts.loggers:
        if name == "csv":
            loggers.append(CSVLogger(run_dir, name="logs", version=""))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(run_dir, name="logs", version="tb"))
        else:
            raise AlanError(f"unknown logger {name!r}; expected csv or tensorboard")
    ckpt = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        save_last=True,
        save_top_k=0,
        every_n_train_steps=opts.checkpoint_every_n_steps,
        save_on_train_epoch_end=True,
    )
    kwargs: dict[str, Any] = dict(
        default_root_dir=run_dir,
        max_epochs=opts.max_epochs,
        max_steps=opts.max_steps,
        precision=opts.precision,
        accelerator=opts.accelerator,
        devices=opts.devices,
        num_nodes=opts.num_nodes,
        strategy=opts.strategy,
        logger=loggers or False,
        callbacks=[ckpt, StepTimeEstimate(), *callbacks] if opts.progress else [ckpt, *callbacks],
        enable_progress_bar=opts.progress,
        enable_model_summary=False,
        log_every_n_steps=opts.log_every_n_steps,
        gradient_clip_val=opts.gradient_clip_val,
        sync_batchnorm=_sync_batchnorm(opts),
        deterministic=False,
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def _sync_batchnorm(opts: RunOptions) -> bool:
    if opts.sync_batchnorm is not None:
        return opts.sync_batchnorm
    import torch

    return opts.accelerator in ("gpu", "cuda") or (opts.accelerator == "auto" and torch.cuda.is_available())


def fit(module: L.LightningModule, opts: RunOptions, run_dir: str | Path, *, train_dataloaders: Any = None,
        val_dataloaders: Any = None, datamodule: Any = None, callbacks: Sequence[Callback] = (),
        **overrides: Any) -> L.Trainer:
    """Seed, build the trainer, and fit; with ``opts.resume`` continue from ``last.ckpt`` if present."""
    L.seed_everything(opts.seed, workers=True, verbose=False)
    ckpt_path = last_checkpoint(run_dir) if opts.resume else None
    if ckpt_path is not None:
        keep_earlier_logs(Path(run_dir) / "logs")
    trainer = make_trainer(opts, run_dir, callbacks, **overrides)
    trainer.fit(module, train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders,
                datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer
