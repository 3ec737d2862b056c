"""`alan synth {echonet,camus,tmed2,acdc} OUT`: write a built-in phantom dataset in a real format."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

synth_app = typer.Typer(help="Write a synthetic phantom dataset in a public dataset's exact format.", no_args_is_help=True)
console = Console(soft_wrap=True)

SEED = typer.Option(0, "--seed", help="Random seed; the same seed writes the same bytes.")
SIZE = typer.Option("default", "--size", help="small (CI, seconds), default (the demo), large (5-10x default).")
FORCE = typer.Option(False, "--force", help="Replace OUT if it exists and is not empty.")
WORKERS = typer.Option(None, "--workers", min=1, help="Processes to generate with (default: the CPUs available, at most 2); output does not depend on it.")


def _run(format: str, out: Path, seed: int, size: str, force: bool, workers: int | None, **options) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from alan.phantom import SIZE_NAMES, read_manifest, synthesize
    from alan.phantom.write import default_workers

    if size not in SIZE_NAMES:
        raise typer.BadParameter(f"expected one of {', '.join(SIZE_NAMES)}", param_hint="--size")
    t0 = time.perf_counter()
    with Progress(TextColumn(f"[bold]{format}[/] {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("records", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        synthesize(format, out, seed=seed, size=size, force=force, progress=progress,
                   workers=default_workers() if workers is None else workers, **options)
    records = read_manifest(out)["records"]
    opts = "".join(f" {k}={v}" for k, v in options.items() if v not in (None, False))
    console.print(f"{format} phantom ({size}, seed {seed}{opts}): {len(records)} records -> {out} "
                  f"in {time.perf_counter() - t0:.1f} s")


@synth_app.command("echonet")
def echonet(out: Path = typer.Argument(..., help="Folder to create."), seed: int = SEED, size: str = SIZE,
            force: bool = FORCE, workers: int = WORKERS,
            codec: str = typer.Option("FFV1", "--codec", help="AVI fourcc (FFV1 is lossless; MJPG is lossy).")) -> None:
    """EchoNet-Dynamic: Videos/*.avi (A4C), FileList.csv, VolumeTracings.csv.

    Example:

        alan synth echonet data/echonet --size small
    """
    _run("echonet", out, seed, size, force, workers, codec=codec)


@synth_app.command("camus")
def camus(out: Path = typer.Argument(..., help="Folder to create."), seed: int = SEED, size: str = SIZE,
          force: bool = FORCE, workers: int = WORKERS,
          release: str = typer.Option("nifti", "--release", help="nifti (database_nifti/, current) or 2019 (mhd/raw).")) -> None:
    """CAMUS: 2CH and 4CH half sequences with LV / MYO / LA ground truth.

    Example:

        alan synth camus data/camus --release nifti
    """
    from alan.phantom import CAMUS_RELEASES

    if release not in CAMUS_RELEASES:
        raise typer.BadParameter(f"expected one of {', '.join(CAMUS_RELEASES)}", param_hint="--release")
    _run("camus", out, seed, size, force, workers, release=release)


@synth_app.command("tmed2")
def tmed2(out: Path = typer.Argument(..., help="Folder to create."), seed: int = SEED, size: str = SIZE,
          force: bool = FORCE, workers: int = WORKERS) -> None:
    """TMED-2: PLAX / PSAX / A4C / A2C still PNGs, labels_per_image.csv, DEV479 folds.

    Example:

        alan synth tmed2 data/tmed2
    """
    _run("tmed2", out, seed, size, force, workers)


@synth_app.command("acdc")
def acdc(out: Path = typer.Argument(..., help="Folder to create."), seed: int = SEED, size: str = SIZE,
         force: bool = FORCE, workers: int = WORKERS,
         spurious: bool = typer.Option(False, "--spurious", help="Plant a class-correlated bright blob outside the heart."),
         broken_test: bool = typer.Option(False, "--broken-test", help="With --spurious: make the blob independent of the class in testing/."),
         spurious_p: float = typer.Option(0.9, "--spurious-p", min=0.0, max=1.0, help="Probability that the blob sits at its class's site.")) -> None:
    """ACDC: short-axis cines of NOR / DCM / HCM / MINF / RV patients (training/ and testing/).

    Example:

        alan synth acdc data/acdc --spurious --broken-test
    """
    if broken_test and not spurious:
        raise typer.BadParameter("needs --spurious", param_hint="--broken-test")
    extra = {"broken_test": broken_test, "spurious_p": spurious_p} if spurious else {}
    _run("acdc", out, seed, size, force, workers, spurious=spurious, **extra)


def register(app: typer.Typer) -> None:
    """Add `alan synth` to the main app."""
    app.add_typer(synth_app, name="synth")
