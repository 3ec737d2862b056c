"""`alan parcels`: parcel maps (and boundary overlays) for a dataset or a single video."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from alan.cli._options import Device, device_option, out_dir


class Overlay(str, Enum):
    png = "png"
    mp4 = "mp4"
    both = "both"
    none = "none"


class As(str, Enum):
    npz = "npz"
    nifti = "nifti"


def parcels(
    input: Path = typer.Argument(..., help="Dataset folder (any reader format) or a single video/DICOM file."),
    backbone: Path = typer.Option(..., "--backbone", help="Locked backbone artifact folder."),
    head: Path = typer.Option(..., "--head", help="RAPTOR head artifact (or the raptor train run folder)."),
    out: Path = out_dir("Output folder: maps/ and overlays/."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    split: str = typer.Option("all", "--split", help="Split(s), comma-separated, or 'all'."),
    as_: As = typer.Option(As.npz, "--as", help="Map file format: npz (uint8/uint16 + ids, hashes) or nifti."),
    overlay: Overlay = typer.Option(Overlay.png, "--overlay", help="Boundary overlays to write."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Frames per backbone batch."),
    limit: int = typer.Option(None, "--limit", min=1, help="At most this many records."),
    device: Device = "auto",
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write a parcel map per record at input resolution (argmax of upsampled RAPTOR logits).

    Example:

        alan parcels data/echonet --backbone runs/dino --head runs/raptor --split test --overlay mp4 --out parcels/
    """
    from alan.cli._options import select_records
    from alan.models.backbones import load_backbone
    from alan.models.raptor import load_head
    from alan.pipelines.parcels import run_parcels

    device = device_option(device)
    bb = load_backbone(backbone, device=device)
    rh = load_head(head, bb).to(device)
    _, records = select_records(input, format, split, limit)
    result = run_parcels(records, bb, rh, out, as_=as_.value, overlay=overlay.value, batch_size=batch_size,
                         progress=progress)
    mean = sum(result.parcels_per_frame) / max(1, len(result.parcels_per_frame))
    typer.echo(f"{len(result.maps)} parcel maps, {len(result.overlays)} overlays -> {out} "
               f"(K={rh.n_parcels}, {mean:.1f} distinct parcels per frame on average)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("parcels")(parcels)
