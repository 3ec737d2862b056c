"""`alan backbone`: import, create, gray-match and inspect locked ViT backbones."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import typer

from alan.cli._options import out_dir

backbone_app = typer.Typer(help="Locked ViT backbones: import foreign weights, inspect artifacts.", no_args_is_help=True)


def _command() -> str:
    return shlex.join(["alan", *sys.argv[1:]])


@backbone_app.command("import")
def import_(
    weights: Path = typer.Argument(..., help="Official DINO .pth (bare or full checkpoint), timm .pth/.safetensors, "
                                             "an alan backbone folder or an alan DINO last.ckpt."),
    arch: str = typer.Option(..., "--arch", help="Target architecture (see `alan backbone archs`)."),
    out: Path = out_dir("Artifact folder to write."),
    key: str = typer.Option("teacher", "--key", help="Which network of a DINO training checkpoint: teacher or student."),
    mean: float = typer.Option(None, "--mean", help="Gray mean of the input standardisation (default: ImageNet's or the stored one)."),
    std: float = typer.Option(None, "--std", help="Gray std (with --mean)."),
) -> None:
    """Import ViT weights strictly, resampling patch/position embeddings to the target size.

    DINO (dino_deitsmall8_pretrain.pth), DINOv2 (dinov2_vits14_pretrain.pth) and DINOv3 ViT-S
    checkpoints are recognised by their key layout.

    Example:

        alan backbone import dino_deitsmall8_pretrain.pth --arch vit_small_p8_224 --out bb/imagenet
    """
    from alan.errors import AlanError
    from alan.models.backbones import save_backbone
    from alan.models.weights import import_backbone

    if (mean is None) != (std is None):
        raise AlanError("give both --mean and --std, or neither")
    bb = import_backbone(weights, arch, key=key, mean=mean, std=std)
    bb.config = replace(bb.config, command=_command())
    digest = save_backbone(bb, out)
    notes = bb.config.meta["import"]["resampled"]
    extra = f", resampled {notes}" if notes else ""
    typer.echo(f"backbone {digest} ({arch}, {bb.config.meta['import']['layout']}{extra}) -> {out}")


@backbone_app.command("random")
def random_(
    arch: str = typer.Option(..., "--arch", help="Architecture (see `alan backbone archs`)."),
    out: Path = out_dir("Artifact folder to write."),
    seed: int = typer.Option(0, "--seed", help="Initialisation seed."),
) -> None:
    """Lock a randomly initialised backbone (a baseline: what do untrained features give?).

    Example:

        alan backbone random --arch vit_tiny_p8_112 --out bb/random
    """
    import torch

    from alan.models.backbones import create_backbone, save_backbone

    torch.manual_seed(seed)
    bb = create_backbone(arch, source=f"random:seed={seed}", command=_command())
    typer.echo(f"backbone {save_backbone(bb, out)} ({arch}, random init, seed {seed}) -> {out}")


@backbone_app.command("gray-match")
def gray_match(
    backbone: Path = typer.Argument(..., help="Backbone artifact folder (or a run folder holding backbone/)."),
    data: list[Path] = typer.Option(..., "--data", help="The dataset the backbone was trained on (repeat for several)."),
    out: Path = out_dir("Artifact folder to write."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    split: str = typer.Option("train", "--split", help="Split(s) whose frames give the reference, or 'all'."),
    max_records: int = typer.Option(None, "--max-records", min=1, help="Evenly spaced records per dataset (default: all)."),
    method: str = typer.Option("histogram", "--method",
                               help="histogram (undo any gray curve; forces each frame's histogram too) or "
                                    "gain-gamma (fit a gain and a gamma per frame; keeps the frame's own histogram)."),
) -> None:
    """Copy a backbone that matches every frame to its training frames' gray levels.

    Beyond the papers: the reference is the distribution of the in-sector gray levels of the
    frames of --data (at the backbone's size). At inference each frame's gray levels are mapped
    onto it: by rank (--method histogram), so any change of gain, gamma or compression reaches
    the ViT as no change, or by a fitted gain and gamma (--method gain-gamma), which undoes those
    two and leaves the frame's content alone. The weights are unchanged. A head trained on the source backbone follows it with
    `alan raptor rebind`. Example:

        alan backbone gray-match runs/dino --data data/echonet --out bb/dino_matched
    """
    import numpy as np

    from alan.cli._options import select_records
    from alan.data.frames import FrameDataset
    from alan.models.backbones import load_backbone, save_backbone, with_gray_reference
    from alan.transforms.intensity import GRAY_METHODS, gray_reference

    if method not in GRAY_METHODS:
        raise typer.BadParameter(f"expected one of {', '.join(GRAY_METHODS)}", param_hint="--method")
    bb = load_backbone(backbone)
    hist, n_records = np.zeros(256, np.int64), 0
    for path in data:
        _, records = select_records(path, format, split)
        hist += FrameDataset(records, size=bb.config.img_size).gray_histogram(max_records)
        n_records += len(records) if max_records is None else min(max_records, len(records))
    copy = with_gray_reference(bb, gray_reference(hist), method, data=[str(p) for p in data], split=split, records=n_records)
    copy.config = replace(copy.config, command=_command())
    digest = save_backbone(copy, out)
    typer.echo(f"backbone {digest} (weights of {bb.hash}, gray reference of {n_records} records) -> {out}")


@backbone_app.command("info")
def info(path: Path = typer.Argument(..., help="Backbone artifact folder (or a run folder holding backbone/)."),
         as_json: bool = typer.Option(False, "--json", help="Print the whole config as JSON.")) -> None:
    """Verify an artifact's hash and show what it is.

    Example:

        alan backbone info runs/dino
    """
    from alan.models.backbones import load_backbone

    bb = load_backbone(path)
    cfg = {**bb.config.to_dict(), "hash": bb.hash}
    if as_json:
        typer.echo(json.dumps(cfg, indent=2, default=str))
        return
    c = bb.config
    typer.echo(f"hash      {bb.hash}\narch      {c.arch} ({c.img_size}px, patch {c.patch_size}, {bb.grid}x{bb.grid} tokens, "
               f"dim {c.embed_dim})\nmean/std  {[round(v, 4) for v in c.mean]} / {[round(v, 4) for v in c.std]}\n"
               f"gray ref  {f'{c.gray_method}, matched to ' + str(c.meta.get('gray_match', {}).get('data', '?')) if c.gray_reference else '-'}\n"
               f"source    {c.source}\ndata      {c.data_fingerprint or '-'}\ncommand   {c.command or '-'}")


@backbone_app.command("archs")
def archs() -> None:
    """List the architectures.

    Example:

        alan backbone archs
    """
    from alan.models.backbones import ARCHS

    for name, s in ARCHS.items():
        typer.echo(f"{name:18s} {s.img_size:4d}px  patch {s.patch_size}  {s.img_size // s.patch_size:2d}x"
                   f"{s.img_size // s.patch_size:<2d} tokens  dim {s.embed_dim}  (timm {s.timm_name})")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(backbone_app, name="backbone")
