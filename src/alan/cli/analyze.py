"""`alan analyze INPUT --out DIR`: masks, LV area curve, ED/ES, EF, view and overlay per recording,
plus one table for the study."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from alan.cli._options import Device, device_option

console = Console(highlight=False)


def analyze(
    input: Path = typer.Argument(..., help="A video / DICOM file, a folder of them (searched recursively), or a "
                                           "dataset folder in any format the readers know."),
    backbone: Path = typer.Option(None, "--backbone", help="Locked backbone artifact folder (default: the one shipped "
                                                           "with alan, with its head)."),
    head: Path = typer.Option(None, "--head", help="RAPTOR head artifact or raptor run folder (default: the one "
                                                   "shipped with alan)."),
    segment: list[Path] = typer.Option(..., "--segment", help="Parcel-to-segment model JSON (LV required; repeat for LA)."),
    out: Path = typer.Option(..., "--out", help="Study folder: records/NAME/, results.csv, results.json, report.html."),
    views: Path = typer.Option(None, "--views", help="kNN bank (`alan views fit`) for each recording's view class."),
    format: str = typer.Option("auto", "--format", help="Dataset format of INPUT (auto detects it)."),
    split: str = typer.Option("all", "--split", help="Split(s) of a dataset to analyse, comma-separated, or 'all'."),
    resume: bool = typer.Option(False, "--resume", help="Keep the records already finished in OUT by the same models."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Frames per backbone batch, filled across "
                                                                    "consecutive recordings."),
    device: Device = "auto",
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with ETA."),
) -> None:
    """Analyse one recording or a whole study; exit code 1 if any recording could not be read.

    Example:

        alan analyze videos/ --backbone runs/dino --head runs/raptor --segment lv.json --segment la.json --out study/
    """
    from alan.artifacts import check_output_dir
    from alan.cli.segment import load_parcellator
    from alan.downstream.knn import WeightedKNN
    from alan.downstream.parcel_to_segment import ParcelToSegment
    from alan.errors import AlanError
    from alan.pipelines.analyze import STUDY_KIND, analyze_study, study_inputs

    check_output_dir(out, STUDY_KIND)
    torch_device = device_option(device)
    models = [ParcelToSegment.from_json(p) for p in segment]
    by_target = {m.target: m for m in models}
    if len(by_target) != len(models):
        raise AlanError("two --segment models have the same target")
    knn = WeightedKNN.load(views) if views is not None else None
    items = study_inputs(input, format, split)
    work_size = int(models[0].provenance_.get("work_size", 112))
    parcellator = load_parcellator(backbone, head, work_size, batch_size=batch_size, device=torch_device)
    result = analyze_study(items, parcellator, by_target, out, knn=knn, resume=resume, progress=progress, console=console)
    for r in result.rows:
        if r["status"] == "failed":
            console.print(f"[red]failed[/] {r['record']}: {r['warnings'][0]}")
            continue
        ef = "n/a" if r["ef_percent"] is None else f"{r['ef_percent']:.1f}%"
        view = f", view {r['view']}" if r.get("view") else ""
        line = f"{r['record']}: {r['frames']} frames, ED {r['ed_frames']}, ES {r['es_frames']}, EF {ef}{view}"
        console.print(line + "".join(f"\n  [yellow]warning:[/] {w}" for w in r["warnings"]))
    n_ok = len(result.rows) - len(result.failed)
    reused = f", {result.reused} reused" if result.reused else ""
    console.print(f"{n_ok} of {len(result.rows)} recordings analysed{reused}, {len(result.warned)} with warnings -> "
                  f"{out / 'results.csv'}, {out / 'report.html'}")
    if result.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("analyze")(analyze)
