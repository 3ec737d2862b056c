"""One Lightning `Trainer` factory for every training command (DINO, RAPTOR, SimCLR).

Scale-out is Lightning's: `accelerator`, `devices`, `num_nodes` and `strategy` go straight to
`lightning.Trainer`, so one machine with N GPUs, torchrun and SLURM all work as Lightning
documents; nothing here is a distributed layer of its own. A run folder holds
``checkpoints/last.ckpt`` (saved every `checkpoint_every_n_steps` and at each epoch end) and
``logs/`` (CSV, optionally TensorBoard); ``resume=True`` continues from ``last.ckpt``, after
checking that the checkpoint is safe to load and fits the model, and says so in one line.

`run_folder(run_dir, kind)` is the output policy of a run folder: it must be absent, empty, or an
earlier run of the same kind (a hidden marker says which); a run that fails before its first
checkpoint (a bad option, bad data) leaves no run folder behind.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from alan.artifacts import MARKER, atomic_write_json, check_output_dir, output_kind
from alan.errors import AlanError, ArtifactError
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


def check_run_dir(run_dir: str | Path, kind: str) -> None:
    """Refuse a run folder that holds anything but an earlier run of `kind` (see `run_folder`).

    A folder with ``checkpoints/last.ckpt`` and no marker (written before markers existed) counts
    as an earlier run, so that it can still be resumed.
    """
    run_dir = Path(run_dir)
    if run_dir.is_dir() and output_kind(run_dir) is None and last_checkpoint(run_dir) is not None:
        return
    try:
        check_output_dir(run_dir, kind)
    except ArtifactError as e:
        raise ArtifactError(f"{e} (a run folder)") from None


@contextmanager
def run_folder(run_dir: str | Path, kind: str) -> Iterator[Path]:
    """The run folder `run_dir`, checked before any work and marked as a run of `kind`.

    If the block fails before the run wrote its first checkpoint, what it created is removed
    (the folder itself if it did not exist or was empty); a run with a checkpoint is kept so
    that ``--resume`` can continue it.
    """
    run_dir = Path(run_dir)
    if launched_rank() != 0:  # DDP: rank 0 owns the run folder (the others see it half-made)
        yield run_dir
        return
    check_run_dir(run_dir, kind)
    top = run_dir  # the outermost folder this run would create
    while not top.parent.exists():
        top = top.parent
    existed = run_dir.is_dir()
    fresh = not existed or not any(run_dir.iterdir())
    try:
        yield run_dir
    except BaseException:
        if fresh and last_checkpoint(run_dir) is None:
            shutil.rmtree(run_dir if existed else top, ignore_errors=True)
            if existed and not run_dir.exists():
                run_dir.mkdir()
        raise


def launched_rank() -> int:
    """0 for the first (or only) process of a run, non-zero for the other DDP processes (torchrun, SLURM
    or Lightning's launcher set the environment)."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    local, node = os.environ.get("LOCAL_RANK", ""), os.environ.get("NODE_RANK", "0")
    return int(local) + int(node) if local.isdigit() and node.isdigit() else 0


def start_run(run_dir: str | Path, kind: str) -> None:
    """Create the run folder and its marker: called when work starts, not before.

    Only the first process does this: under DDP another rank writing the folder while rank 0
    checks it would look like a foreign folder to rank 0. The marker is written atomically.
    """
    if launched_rank() != 0:
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / MARKER
    if not marker.is_file():
        atomic_write_json(marker, {"kind": kind})


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
        kind: str | None = None, **overrides: Any) -> L.Trainer:
    """Seed, build the trainer, and fit; with ``opts.resume`` continue from ``last.ckpt`` if present.

    The trainer is built (and its options checked) before the run folder is created; `kind`
    marks the folder (default ``<module class>_run``). A checkpoint to resume from is loaded
    safely and checked against `module` first: a truncated, unsafe or foreign one is a one-line
    `DataError`. Resuming prints one line with the step it continues from.
    """
    import torch

    from alan.models.weights import SAFE_GLOBALS, read_training_checkpoint

    L.seed_everything(opts.seed, workers=True, verbose=False)
    ckpt_path = last_checkpoint(run_dir) if opts.resume else None
    if ckpt_path is not None:
        ckpt = read_training_checkpoint(ckpt_path, module)
        _say(f"resuming from {ckpt_path}: step {int(ckpt.get('global_step', 0))}, epoch {int(ckpt.get('epoch', 0))}")
        del ckpt
    elif opts.resume:
        _say(f"nothing to resume in {run_dir} (no checkpoints/last.ckpt): starting from step 0")
    trainer = make_trainer(opts, run_dir, callbacks, **overrides)
    start_run(run_dir, kind or f"{type(module).__name__.lower()}_run")
    if ckpt_path is not None and launched_rank() == 0:
        keep_earlier_logs(Path(run_dir) / "logs")
    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
        trainer.fit(module, train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders,
                    datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return trainer


def _say(line: str) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
