"""Helpers shared by the commands' options (kept free of heavy imports)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

# The run options every training command shares (DINO, RAPTOR, SimCLR), one definition each.
Accelerator = Annotated[str, typer.Option("--accelerator", help="Lightning accelerator: auto, cpu, gpu, ...")]
Devices = Annotated[str, typer.Option("--devices", help="Devices per node: a count, -1 (all), a list '0,1', or auto.")]
NumNodes = Annotated[int, typer.Option("--num-nodes", help="Machines (torchrun / SLURM launches are picked up by Lightning).")]
Strategy = Annotated[str, typer.Option("--strategy", help="e.g. ddp; auto picks DDP when there are several devices.")]
Precision = Annotated[str, typer.Option("--precision", help="Lightning precision, e.g. 32-true, bf16-mixed.")]
NumWorkers = Annotated[int, typer.Option("--num-workers", help="DataLoader worker processes (decoding).")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of sampling, augmentation and initialisation.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoints/last.ckpt if present.")]
ShowProgress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
Tensorboard = Annotated[bool, typer.Option("--tensorboard", help="Also write TensorBoard logs.")]


def run_options(*, devices: str | int, tensorboard: bool, **fields: Any):
    """`alan.training.RunOptions` from the shared options (``--devices`` parsed, loggers from ``--tensorboard``)."""
    from alan.training import RunOptions

    return RunOptions(devices=parse_devices(devices), loggers=("csv", "tensorboard") if tensorboard else ("csv",), **fields)


def parse_devices(devices: str | int) -> str | int:
    """A ``--devices`` value as Lightning wants it: a count ("2", "-1") or a spec ("auto", "0,1")."""
    text = str(devices)
    return int(text) if text.lstrip("-").isdigit() else text


def select_records(path: Path, format: str, split: str, limit: int | None = None):
    """Records of `split` ("all" for every record) of the dataset or video at `path`."""
    from alan.data import open_dataset
    from alan.errors import DataError

    dataset = open_dataset(path, format)
    records = list(dataset.records) if split.lower() == "all" else dataset.split(*split.split(","))
    if not records:
        splits = ", ".join(f"{k} ({v})" for k, v in dataset.splits().items())
        raise DataError(path, f"no records in split {split!r} (splits: {splits}; use --split all for every record)")
    return dataset, records[:limit] if limit else records
