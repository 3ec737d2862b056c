"""Helpers shared by the commands' options (kept free of heavy imports)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

class DeviceName(str, Enum):
    """Values of --device: Lightning's accelerators plus torch's "cuda"; auto takes a GPU where one is present."""

    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"
    cuda = "cuda"
    mps = "mps"
    tpu = "tpu"


class PrecisionName(str, Enum):
    """Lightning's precision names."""

    p32 = "32-true"
    p64 = "64-true"
    p16_mixed = "16-mixed"
    bf16_mixed = "bf16-mixed"
    p16 = "16-true"
    bf16 = "bf16-true"


def _device_check(value: DeviceName | str | None) -> str | None:
    """Refuse, while parsing (before any work), a device that this machine does not have."""
    if value is None:
        return value
    import torch

    value = getattr(value, "value", value).lower()
    if value in ("gpu", "cuda") and not torch.cuda.is_available():
        raise typer.BadParameter(f"{value}: no CUDA GPU is usable here (torch {torch.__version__}); use auto or cpu")
    if value == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise typer.BadParameter("mps: no Apple GPU is usable here; use auto or cpu")
    if value == "tpu":
        import importlib.util

        if importlib.util.find_spec("torch_xla") is None:
            raise typer.BadParameter("tpu: torch_xla is not installed; use auto or cpu")
    return value


def _out_path(value: Path | None) -> Path | None:
    """Refuse an output path that is a file (where a folder is wanted) or under a non-writable folder."""
    if value is None:
        return value
    import os

    if value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{value}: exists and is not a folder")
    parent = value if value.is_dir() else value.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"{value}: cannot write under {parent} (not a writable folder)")
    return value


def _out_file(value: Path | None) -> Path | None:
    """Refuse an output file path that is a folder or under a non-writable folder."""
    if value is None:
        return value
    from alan.artifacts import check_output_file
    from alan.errors import ArtifactError

    try:
        check_output_file(value)
    except ArtifactError as e:
        raise typer.BadParameter(str(e)) from None
    return value


def out_dir(help: str, default: Any = ..., name: str = "--out") -> Any:
    """An output folder option (--out by default), checked while parsing."""
    return typer.Option(default, name, help=help, callback=_out_path)


def out_file(help: str, default: Any = ..., name: str = "--out") -> Any:
    """An --out file option, checked while parsing."""
    return typer.Option(default, name, help=help, callback=_out_file)


# The run options every training command shares (DINO, RAPTOR, SimCLR), one definition each.
Device = Annotated[DeviceName, typer.Option("--device", case_sensitive=False, callback=_device_check,
                                            help="Where to run: auto (a GPU where one is present), cpu, gpu/cuda, mps, tpu.")]
AcceleratorAlias = Annotated[DeviceName | None, typer.Option("--accelerator", hidden=True, case_sensitive=False,
                                                             callback=_device_check, help="Old name of --device.")]
Devices = Annotated[str, typer.Option("--devices", help="Devices per node: a count, -1 (all), a list '0,1', or auto.")]
NumNodes = Annotated[int, typer.Option("--num-nodes", min=1, help="Machines (torchrun / SLURM launches are picked up by Lightning).")]
Strategy = Annotated[str, typer.Option("--strategy", help="e.g. ddp; auto picks DDP when there are several devices.")]
Precision = Annotated[PrecisionName, typer.Option("--precision", callback=lambda v: getattr(v, "value", v),
                                                  help="Lightning precision: 32-true (default), bf16-mixed, 16-mixed, ...")]
NumWorkers = Annotated[int, typer.Option("--num-workers", min=0, help="DataLoader worker processes (decoding).")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of sampling, augmentation and initialisation.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoints/last.ckpt if present.")]
ShowProgress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
Tensorboard = Annotated[bool, typer.Option("--tensorboard", help="Also write TensorBoard logs (needs the "
                                                                 "tensorboard extra: pip install 'alan[tensorboard]').")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Items per batch per device.")]


def accelerator(device: str, alias: str | None = None) -> str:
    """The Lightning accelerator for --device (or its old spelling --accelerator, which wins if given)."""
    value = str(getattr(alias or device, "value", alias or device)).lower()
    return "gpu" if value == "cuda" else value


def device_option(device: str, alias: str | None = None) -> str:
    """The torch device for inference: --device auto is cuda where a GPU is present, else cpu."""
    import torch

    value = str(getattr(alias or device, "value", alias or device)).lower()
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "tpu":
        from alan.errors import AlanError

        raise AlanError("--device tpu is for training; inference runs on cpu, cuda or mps")
    return "cuda" if value == "gpu" else value


def run_options(*, devices: str | int, tensorboard: bool, **fields: Any):
    """`alan.training.RunOptions` from the shared options (``--devices`` parsed, loggers from ``--tensorboard``)."""
    from alan.training import RunOptions

    if tensorboard:
        import importlib.util

        if not any(importlib.util.find_spec(m) for m in ("tensorboardX", "tensorboard")):
            from alan.errors import AlanError

            raise AlanError("--tensorboard needs tensorboardX: pip install 'alan[tensorboard]'")
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
