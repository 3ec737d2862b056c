"""`alan dino train`: self-supervised DINO pre-training of the ALAN backbone on any dataset's frames."""

from __future__ import annotations

import shlex
import sys
from enum import Enum
from pathlib import Path

import typer

from alan.cli._options import (AcceleratorAlias, Device, Devices, NumNodes, NumWorkers, Precision, Resume, Seed,
                                ShowProgress, Strategy, Tensorboard, accelerator, out_dir, run_options, select_records)

dino_app = typer.Typer(help="DINO self-supervised backbone training (Caron et al., Emerging Properties in "
                            "Self-Supervised Vision Transformers; the ALAN paper's backbone).", no_args_is_help=True)

class RecipeName(str, Enum):
    """Values of --recipe: the paper's DINO, or DINOv2's CLS + masked-patch (iBOT) + KoLeo objective."""

    dino = "dino"
    dinov2 = "dinov2"


#: The default architecture: trains on a CPU in minutes per epoch of a small dataset. The paper's is vit_small_p4_112.
DEFAULT_ARCH = "vit_tiny_d6_p8_112"
PAPER_ARCH = "vit_small_p4_112"


@dino_app.command("train")
def train(
    data: list[Path] = typer.Option(..., "--data", help="Dataset folder (any reader format) or a video file; repeat "
                                    "--data to train on the frames of several datasets together."),
    arch: str = typer.Option(DEFAULT_ARCH, "--arch", help=f"Architecture (see `alan backbone archs`); default "
                             f"{DEFAULT_ARCH} (CPU-sized); the paper's: {PAPER_ARCH} (or --arch paper)."),
    out: Path = out_dir("Run folder: checkpoints/, logs/, and the backbone artifact in backbone/."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it; one format for every --data)."),
    split: str = typer.Option("train", "--split", help="Split(s) whose frames are used, comma-separated, or 'all'."),
    epochs: int = typer.Option(40, "--epochs", min=1, help="Epochs over all frames (paper's echo run: 40-50)."),
    max_steps: int = typer.Option(-1, "--max-steps", min=-1, help="Stop after this many steps (-1: no limit); schedules span the run."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Frames per batch per device (the lr scales with the global batch)."),
    n_local: int = typer.Option(8, "--n-local", min=0, help="Local crops per frame."),
    out_dim: int = typer.Option(65536, "--out-dim", min=1, help="DINO head output dimension (small values for CPU smoke runs)."),
    hidden_dim: int = typer.Option(2048, "--hidden-dim", min=1, help="DINO head hidden width."),
    bottleneck_dim: int = typer.Option(256, "--bottleneck-dim", min=1, help="DINO head bottleneck width."),
    head_batch_norm: bool = typer.Option(False, "--head-batch-norm/--no-head-batch-norm",
                                         help="BatchNorm in the DINO head's MLP (the official --use_bn_in_head)."),
    lr: float = typer.Option(5e-4, "--lr", help="Base learning rate per 256 frames."),
    warmup_epochs: float = typer.Option(10, "--warmup-epochs", help="Linear lr warm-up (capped at 25% of the run)."),
    teacher_temp: float = typer.Option(0.04, "--teacher-temp", help="Final teacher temperature."),
    warmup_teacher_temp: float = typer.Option(0.04, "--warmup-teacher-temp", help="Teacher temperature at the start of its warm-up."),
    warmup_teacher_temp_epochs: float = typer.Option(30, "--warmup-teacher-temp-epochs", help="Teacher temperature warm-up (paper: 30)."),
    momentum_teacher: float = typer.Option(0.996, "--momentum-teacher", help="Initial teacher EMA momentum (cosine to 1)."),
    drop_path: float = typer.Option(0.1, "--drop-path", help="Student drop-path rate."),
    recipe: RecipeName = typer.Option(RecipeName.dino, "--recipe", help="dino: the paper's DINO (CLS loss only); "
                                      "dinov2: adds DINOv2's masked-patch (iBOT) self-distillation on the global "
                                      "crops and KoLeo on the student CLS, a dense objective for the patch tokens."),
    ibot_weight: float = typer.Option(None, "--ibot-weight", min=0.0, help="dinov2: weight of the masked-patch "
                                      "(iBOT) term (default 1.0, DINOv2's)."),
    koleo_weight: float = typer.Option(None, "--koleo-weight", min=0.0, help="dinov2: weight of KoLeo on the "
                                       "student CLS tokens (default 0.1, DINOv2's; 0 turns it off)."),
    mask_ratio: tuple[float, float] = typer.Option(None, "--mask-ratio", help="dinov2: MIN MAX share of "
                                                   "patches masked per masked image (default 0.1 0.5, DINOv2's)."),
    mask_probability: float = typer.Option(None, "--mask-probability", help="dinov2: share of the global crops "
                                           "that are masked (default 0.5, DINOv2's)."),
    ibot_separate_head: bool = typer.Option(None, "--ibot-separate-head/--ibot-shared-head", help="dinov2: an "
                                            "iBOT head of its own (default, DINOv2's untied heads) or the DINO head."),
    init: Path = typer.Option(None, "--init", help="Start from this backbone artifact (e.g. imported ImageNet DINO)."),
    frame_size: int = typer.Option(None, "--frame-size", help="Frames are resized to this square size (default: the arch's)."),
    window: int = typer.Option(16, "--window", min=1, help="Shuffle window in records (the per-worker video caches hold 2x this)."),
    stats_records: int = typer.Option(None, "--stats-records", min=1, help="Compute mean/std on this many evenly spaced records (default: all)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Use at most this many records (quick runs)."),
    device: Device = "auto",
    accelerator_alias: AcceleratorAlias = None,
    devices: Devices = "auto",
    num_nodes: NumNodes = 1,
    strategy: Strategy = "auto",
    precision: Precision = "32-true",
    num_workers: NumWorkers = 0,
    seed: Seed = 0,
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", min=1, help="Save checkpoints/last.ckpt every N steps."),
    resume: Resume = False,
    progress: ShowProgress = True,
    tensorboard: Tensorboard = False,
    log_every: int = typer.Option(10, "--log-every", min=1, help="Log metrics every N steps."),
) -> None:
    """Train DINO on all frames of the chosen split and lock the teacher as OUT/backbone.

    Prints the number of steps and a time estimate measured on the first steps.

    Example:

        alan dino train --data data/echonet --out runs/dino --epochs 10

        alan dino train --data data/echonet --out runs/dinov2 --recipe dinov2 --mask-ratio 0.1 0.5
    """
    from alan.errors import AlanError, DataError
    from alan.models.backbones import arch_spec, load_backbone
    from alan.models.dino import DINOConfig, train_dino

    arch = PAPER_ARCH if arch == "paper" else arch
    arch_spec(arch)
    dense = {"ibot_weight": ibot_weight, "koleo_weight": koleo_weight,
             "mask_ratio": None if mask_ratio is None or None in mask_ratio else tuple(mask_ratio),
             "mask_probability": mask_probability, "ibot_separate_head": ibot_separate_head}
    dense = {k: v for k, v in dense.items() if v is not None}
    if dense and recipe is not RecipeName.dinov2:
        flags = ", ".join("--" + k.replace("_", "-") for k in dense)
        raise AlanError(f"{flags} only apply to --recipe dinov2")
    records, formats = [], []
    for path in data:
        dataset, found = select_records(path, format, split, limit)
        records += found
        formats.append(dataset.format)
    config = DINOConfig(arch=arch, out_dim=out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
                        head_batch_norm=head_batch_norm, n_local=n_local, lr=lr, warmup_epochs=warmup_epochs,
                        teacher_temp=teacher_temp, warmup_teacher_temp=warmup_teacher_temp,
                        warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
                        momentum_teacher=momentum_teacher, drop_path=drop_path, recipe=recipe.value, **dense)
    opts = run_options(max_epochs=epochs, max_steps=max_steps, batch_size=batch_size, precision=precision,
                       accelerator=accelerator(device, accelerator_alias), devices=devices, num_nodes=num_nodes, strategy=strategy,
                       num_workers=num_workers, seed=seed, resume=resume, progress=progress, tensorboard=tensorboard,
                       log_every_n_steps=log_every, checkpoint_every_n_steps=checkpoint_every)
    init_bb = load_backbone(init) if init is not None else None
    if init_bb is not None and init_bb.config.arch != arch:
        raise DataError(init, f"--init backbone is {init_bb.config.arch}, not {arch}")
    _, trainer, digest = train_dino(records, config, opts, out, out / "backbone", format="+".join(formats),
                                    data_root=data[0] if len(data) == 1 else [str(p) for p in data],
                                    split=split, frame_size=frame_size, init=init_bb, window=window,
                                    cache_videos=2 * window, stats_records=stats_records,
                                    command=shlex.join(["alan", *sys.argv[1:]]))
    if digest is not None:
        typer.echo(f"backbone {digest} ({arch}, {trainer.global_step} steps, {len(records)} records) -> {out / 'backbone'}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(dino_app, name="dino")
