"""`alan raptor train`: train a RAPTOR head (STRAPTOR loss) on a locked backbone."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from alan.cli._options import (AcceleratorAlias, Device, Devices, NumNodes, NumWorkers, Precision, Resume, Seed,
                                ShowProgress, Strategy, Tensorboard, accelerator, out_dir, run_options, select_records)

raptor_app = typer.Typer(help="RAPTOR parcellation head on a locked backbone (ALAN).", no_args_is_help=True)


class Preset(str, Enum):
    reference = "reference"
    stego = "stego"


class Cache(str, Enum):
    auto = "auto"
    memory = "memory"
    disk = "disk"
    off = "off"


class Short(str, Enum):
    pad = "pad"
    skip = "skip"



@raptor_app.command("train")
def train(
    backbone: Path = typer.Option(..., "--backbone", help="Locked backbone artifact folder."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (any reader format) or a video file."),
    out: Path = out_dir("Run folder: checkpoints/, logs/, and the head artifact in head/."),
    k: int = typer.Option(64, "--k", min=2, help="Number of parcels K (paper: 32, 64, 112)."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    split: str = typer.Option("train", "--split", help="Split(s) to train on, comma-separated, or 'all'."),
    preset: Preset = typer.Option(Preset.reference, "--preset", help="Loss preset: reference code or STEGO's ViT-S settings."),
    epochs: int = typer.Option(40, "--epochs", min=1, help="Epochs (paper: the loss saturates at ~40)."),
    max_steps: int = typer.Option(-1, "--max-steps", min=-1, help="Stop after this many steps (-1: no limit)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Sequences (clips) per batch."),
    lr: float = typer.Option(5e-3, "--lr", min=0.0, help="Adam learning rate."),
    length: int = typer.Option(16, "--length", min=1, help="Frames per clip."),
    period: int = typer.Option(2, "--period", min=1, help="Step between clip frames."),
    short: Short = typer.Option(Short.pad, "--short", help="Videos shorter than a clip: pad (repeat last frame) or skip."),
    cache: Cache = typer.Option(Cache.auto, "--cache", help="Token cache: auto (memory if it fits), memory, disk, off."),
    cache_budget_gb: float = typer.Option(None, "--cache-budget-gb", min=0.0, help="Memory budget for --cache auto (default: half the available memory)."),
    standardize_tokens: bool = typer.Option(False, "--standardize-tokens", help="Standardise tokens per channel (training-set mean/std)."),
    position: float = typer.Option(0.0, "--position", min=0.0,
                                   help="Weight of the tokens' grid position in the head's input and the loss target "
                                        "(0: the paper's head; beyond the paper, see docs/raptor.md)."),
    input_size: int = typer.Option(None, "--input-size", min=1,
                                   help="Size (px) the frames go to the backbone at, for training and inference, a "
                                        "multiple of its patch size (default: the backbone's own; larger gives a finer "
                                        "token grid, beyond the paper, see docs/raptor.md), e.g. 224."),
    limit: int = typer.Option(None, "--limit", min=1, help="Use at most this many records (quick runs)."),
    device: Device = "auto",
    accelerator_alias: AcceleratorAlias = None,
    devices: Devices = "auto",
    num_nodes: NumNodes = 1,
    strategy: Strategy = "auto",
    precision: Precision = "32-true",
    num_workers: NumWorkers = 0,
    seed: Seed = 0,
    resume: Resume = False,
    progress: ShowProgress = True,
    tensorboard: Tensorboard = False,
) -> None:
    """Train RAPTOR with the STRAPTOR loss: clips of 16 frames (period 2), Adam, frozen backbone.

    Prints the number of steps and a time estimate measured on the first steps.

    Example:

        alan raptor train --backbone runs/dino --data data/echonet --k 64 --out runs/raptor
    """
    from alan.models.backbones import load_backbone
    from alan.models.raptor_module import train_raptor

    bb = load_backbone(backbone)
    dataset, records = select_records(data, format, split, limit)
    opts = run_options(max_epochs=epochs, max_steps=max_steps, batch_size=batch_size, precision=precision,
                       accelerator=accelerator(device, accelerator_alias), devices=devices, num_nodes=num_nodes, strategy=strategy,
                       num_workers=num_workers, seed=seed, resume=resume, progress=progress, tensorboard=tensorboard)
    budget = None if cache_budget_gb is None else int(cache_budget_gb * 2**30)
    head = train_raptor(bb, records, out, n_parcels=k, loss=preset.value, length=length, period=period,
                        short=short.value, lr=lr, cache=cache.value, cache_budget=budget,
                        standardize_tokens=standardize_tokens, position=position, input_size=input_size, opts=opts,
                        data={"path": str(data), "format": dataset.format, "split": split, "n_records": len(records)})
    typer.echo(f"head {head.hash} (K={k}, backbone {bb.hash}) -> {out / 'head'}")


@raptor_app.command("input-size")
def input_size(
    head: Path = typer.Option(..., "--head", help="RAPTOR head artifact or raptor run folder."),
    size: int = typer.Option(..., "--size", min=1,
                             help="Size (px) frames go to the backbone at, a multiple of its patch size (e.g. 224)."),
    out: Path = out_dir("Output folder for the new head artifact."),
) -> None:
    """Copy a head with another input size (beyond the paper, see docs/raptor.md, "Input size").

    The weights are unchanged; frames go to the backbone at SIZE px at inference, for a finer token
    grid. Example:

        alan raptor input-size --head runs/raptor --size 224 --out heads/raptor_224
    """
    from alan.models.raptor import set_input_size

    new = set_input_size(head, size, out)
    typer.echo(f"head {new.hash} (from {new.config['meta']['input_size_from']}, frames at {size} px) -> {out}")


@raptor_app.command("rebind")
def rebind(
    head: Path = typer.Option(..., "--head", help="RAPTOR head artifact or raptor run folder."),
    backbone: Path = typer.Option(..., "--backbone", help="A gray-matched copy of the head's backbone (`alan backbone gray-match`)."),
    out: Path = out_dir("Output folder for the new head artifact."),
) -> None:
    """Copy a head to follow a gray-matched copy of its backbone (the weights are unchanged).

    Example:

        alan raptor rebind --head runs/raptor --backbone bb/dino_matched --out heads/raptor_matched
    """
    from alan.models.backbones import load_backbone
    from alan.models.raptor import rebind as rebind_head

    new = rebind_head(head, load_backbone(backbone), out)
    typer.echo(f"head {new.hash} (from {new.config['meta']['rebound_from']}, on backbone {new.config['backbone_hash']}) -> {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(raptor_app, name="raptor")
