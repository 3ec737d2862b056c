"""`alan sscl pretrain` and `alan sscl grid`: SSCL with anatomic priors (SimCLR pre-training on CMR, with and without heart masks)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path

import typer

from alan.cli._options import (AcceleratorAlias, Device, Devices, NumNodes, NumWorkers, Precision, Resume, Seed,
                                ShowProgress, Strategy, Tensorboard, accelerator, out_dir, run_options, select_records)

sscl_app = typer.Typer(help="SSCL with anatomic priors: SimCLR pre-training and the paper's grid.",
                       no_args_is_help=True)


class Input(str, Enum):
    full = "full"
    segmented = "segmented"


class Frames(str, Enum):
    edes = "edes"
    all = "all"


class MaskKind(str, Enum):
    gt = "gt"
    alan = "alan"


class Preset(str, Enum):
    paper = "paper"
    tiny = "tiny"


class Level(str, Enum):
    patient = "patient"
    slice = "slice"



def _run_options(epochs, batch_size, device, devices, num_nodes, strategy, precision, num_workers, seed, resume,
                 progress, tensorboard):
    return run_options(max_epochs=epochs, batch_size=batch_size, precision=precision, accelerator=device,
                       devices=devices, num_nodes=num_nodes, strategy=strategy, num_workers=num_workers, seed=seed,
                       resume=resume, progress=progress, tensorboard=tensorboard)


_MASK_HELP = "Heart masks: gt (the dataset's LV+MYO+RV) or alan (parcel-to-segment on a locked backbone + head)."


@sscl_app.command("pretrain")
def pretrain_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder with short-axis cine slices (ACDC layout)."),
    out: Path = out_dir("Run folder: checkpoints/, logs/ and the encoder artifact in encoder/."),
    arch: str = typer.Option("vgg16", "--arch", help="vgg16, densenet121, vgg_tiny, densenet_tiny or a timm name."),
    input: Input = typer.Option(Input.full, "--input", help="full images, or segmented (image x heart mask)."),
    frames: Frames = typer.Option(Frames.edes, "--frames", help="edes: the ED and ES frames; all: every cine frame."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    split: str = typer.Option("train", "--split", help="Split(s) whose images are used, comma-separated, or 'all'."),
    mask_source: MaskKind = typer.Option(MaskKind.gt, "--mask-source", help=_MASK_HELP),
    alan_backbone: Path = typer.Option(None, "--alan-backbone", help="Locked backbone artifact (alan masks)."),
    alan_head: Path = typer.Option(None, "--alan-head", help="RAPTOR head artifact (alan masks)."),
    alan_p2s: list[Path] = typer.Option(None, "--alan-p2s", help="Parcel-to-segment JSON, repeatable (LV, MYO, RV: OR-ed)."),
    margin: int = typer.Option(0, "--margin", min=0, help="Dilate the heart mask by this many pixels (native resolution)."),
    img_size: int = typer.Option(224, "--img-size", min=16, help="Square input size of the encoder."),
    epochs: int = typer.Option(100, "--epochs", min=1, help="Maximum epochs (early stopping on the validation loss)."),
    batch_size: int = typer.Option(64, "--batch-size", min=2, help="Images per batch (paper: 64-256)."),
    lr: float = typer.Option(1e-4, "--lr", min=0.0, help="Adam learning rate (paper: 1e-4)."),
    temperature: float = typer.Option(0.1, "--temperature", min=1e-6, help="NT-Xent temperature (paper: 0.1)."),
    patience: int = typer.Option(10, "--patience", min=1, help="Early-stopping patience in epochs."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.9, help="Patients held out for early stopping."),
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
    """SimCLR pre-training of one encoder; writes a locked encoder artifact (safetensors + JSON with hash).

    Prints the number of steps and a time estimate measured on the first steps.

    Example:

        alan sscl pretrain --data data/acdc --arch vgg_tiny --img-size 64 --input segmented --out runs/sscl_seg
    """
    from alan.pipelines.sscl import PretrainConfig, make_mask_source, pretrain, pretrain_images

    dataset, records = select_records(data, format, split)
    opts = _run_options(epochs, batch_size, accelerator(device, accelerator_alias), devices, num_nodes, strategy, precision, num_workers, seed,
                        resume, progress, tensorboard)
    masks = make_mask_source(mask_source.value, alan_backbone, alan_head, alan_p2s or []) \
        if input == Input.segmented else None
    cfg = PretrainConfig(arch=arch, input=input.value, img_size=img_size, frames=frames.value, lr=lr,
                         temperature=temperature, patience=patience, val_fraction=val_fraction)
    images, patients = pretrain_images(records, cfg, masks, margin)
    prov = {"path": str(data), "format": dataset.format, "split": split, "n_records": len(records),
            "mask": masks.config() if masks is not None and hasattr(masks, "config") else None, "margin": margin}
    res = pretrain(images, patients, cfg, opts, out, out / "encoder", prov, log=lambda s: typer.echo(s, err=True))
    p = res.config["pretraining"]
    typer.echo(f"encoder {res.hash} ({arch}, {input.value}, best val loss {p['best_val_loss']:.4f} at epoch "
               f"{p['best_epoch']}) -> {out / 'encoder'}")


@sscl_app.command("grid", context_settings={"allow_extra_args": True})
def grid_cmd(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="Dataset folder with short-axis cine slices (ACDC layout)."),
    out: Path = out_dir("Output folder: grid.json, tables.txt, convergence.png, encoders/."),
    arch: list[str] = typer.Option(None, "--arch", help="Encoders (several: --arch vgg16 densenet121). "
                                                       "Default: vgg16 densenet121 (paper), vgg_tiny densenet_tiny (tiny)."),
    imagenet_weights: list[str] = typer.Option(None, "--imagenet-weights", help="ImageNet weights file (torch or "
                                               "safetensors), repeatable, matched to the encoder it fits or ARCH=FILE."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: the mean AUC per encoder, pre-training and input (auc.ARCH.PRETRAINING.INPUT)."),
    preset: Preset = typer.Option(Preset.paper, "--preset", help="paper: 224 px, 5 seeds; tiny: CPU-sized (64 px)."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    img_size: int = typer.Option(None, "--img-size", min=16, help="Square input size (paper preset 224, tiny 64)."),
    seeds: int = typer.Option(None, "--seeds", min=1, help="Number of repeated 70/30 splits (paper preset 5, tiny 3)."),
    level: Level = typer.Option(Level.patient, "--level", help="AUC over patients (slice probabilities averaged) or slices."),
    finetune: bool = typer.Option(False, "--finetune", help="Fine-tune the encoders too (default: frozen)."),
    mask_source: MaskKind = typer.Option(MaskKind.gt, "--mask-source", help=_MASK_HELP),
    alan_backbone: Path = typer.Option(None, "--alan-backbone", help="Locked backbone artifact (alan masks)."),
    alan_head: Path = typer.Option(None, "--alan-head", help="RAPTOR head artifact (alan masks)."),
    alan_p2s: list[Path] = typer.Option(None, "--alan-p2s", help="Parcel-to-segment JSON, repeatable (OR-ed)."),
    margin: int = typer.Option(0, "--margin", min=0, help="Dilate the heart mask by this many pixels (native resolution)."),
    frames: Frames = typer.Option(Frames.edes, "--frames", help="SimCLR on ED/ES frames or every cine frame."),
    pretrain_epochs: int = typer.Option(None, "--pretrain-epochs", min=1, help="Max SimCLR epochs (paper preset 100, tiny 15)."),
    pretrain_batch_size: int = typer.Option(64, "--pretrain-batch-size", min=2, help="SimCLR batch (paper: 64-256)."),
    pretrain_lr: float = typer.Option(None, "--pretrain-lr", min=0.0, help="SimCLR lr (paper 1e-4; tiny preset 1e-3)."),
    no_reuse: bool = typer.Option(False, "--no-reuse", help="Pre-train again even if OUT/encoders/ has a match."),
    device: Device = "auto",
    accelerator_alias: AcceleratorAlias = None,
    devices: Devices = "auto",
    num_nodes: NumNodes = 1,
    strategy: Strategy = "auto",
    precision: Precision = "32-true",
    num_workers: NumWorkers = 0,
    seed: int = typer.Option(0, "--seed", help="Seed of pre-training and of the random ('none') encoders."),
    resume: bool = typer.Option(False, "--resume", help="Resume interrupted SimCLR runs from their last.ckpt."),
    progress: ShowProgress = True,
    tensorboard: Tensorboard = False,
) -> None:
    """The paper's grid: pre-training {none, ImageNet, SSCL-full, SSCL-segmented} x input {full, segmented}.

    The paper preset (VGG16 and DenseNet121 at 224 px, 5 seeds) takes hours without a GPU; each
    pre-training prints its number of steps and a measured time estimate. --preset tiny is CPU-sized.

    Example:

        alan sscl grid --data data/acdc --preset tiny --out runs/sscl
    """
    from alan.data import open_dataset
    from alan.errors import AlanError
    from alan.models.encoders import PAPER_ARCHS, TINY
    from alan.pipelines.sscl import GridConfig, make_mask_source, match_imagenet_weights, run_grid, summary_json

    archs = list(arch or [])
    for extra in ctx.args:  # `--arch vgg16 densenet121`: the second name arrives as an extra argument
        if extra.startswith("-"):
            raise AlanError(f"unexpected option {extra!r}")
        archs.append(extra)
    if ctx.args and not arch:
        raise AlanError(f"unexpected argument(s) {' '.join(ctx.args)}")
    archs = [a for s in archs for a in s.split(",") if a]
    tiny = preset == Preset.tiny
    if not archs:
        archs = list(TINY) if tiny else list(PAPER_ARCHS)
    overrides = {"archs": tuple(archs), "level": level.value, "finetune": finetune, "margin": margin,
                 "pretrain_frames": frames.value}
    if img_size:
        overrides["img_size"] = img_size
    if seeds:
        overrides["seeds"] = tuple(range(seeds))
    if pretrain_lr:
        overrides["pretrain_lr"] = pretrain_lr
    cfg = GridConfig.tiny(**overrides) if tiny else GridConfig(**overrides)
    if imagenet_weights:
        cfg.imagenet_weights = match_imagenet_weights(cfg.archs, imagenet_weights)
    epochs = pretrain_epochs or (15 if tiny else 100)
    opts = _run_options(epochs, pretrain_batch_size, accelerator(device, accelerator_alias), devices, num_nodes, strategy, precision, num_workers,
                        seed, resume, progress and not as_json, tensorboard)
    dataset = open_dataset(data, format)
    masks = make_mask_source(mask_source.value, alan_backbone, alan_head, alan_p2s or [])

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if as_json else sys.stdout, flush=True)

    result = run_grid(dataset, cfg, opts, out, mask_source=masks, log=log, reuse=not no_reuse)
    if as_json:
        print(json.dumps(summary_json(result), indent=2))
    else:
        print()
        print((out / "tables.txt").read_text(), end="")
        print(f"\nwrote {out / 'grid.json'}, {out / 'tables.txt'}, {out / 'convergence.png'} ({result['seconds']:.0f} s)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(sscl_app, name="sscl")
