"""`alan analyze VIDEO`: masks, LV area curve, ED/ES, EF, view, overlay for one recording."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def analyze(
    video: Path = typer.Argument(..., help="An AVI / MP4 / DICOM recording."),
    backbone: Path = typer.Option(..., "--backbone"),
    head: Path = typer.Option(..., "--head"),
    segment: list[Path] = typer.Option(..., "--segment", help="Parcel-to-segment model JSON (LV required; repeat for LA)."),
    views: Path = typer.Option(None, "--views", help="kNN bank for the view class."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
) -> None:
    """Analyse one recording: per-frame LV (and LA) masks, ED/ES, EF, view, overlay MP4, plot, JSON."""
    from alan.cli.segment import load_parcellator
    from alan.data import open_dataset
    from alan.downstream.knn import WeightedKNN
    from alan.downstream.parcel_to_segment import ParcelToSegment
    from alan.errors import AlanError
    from alan.pipelines.analyze import analyze_record

    models = [ParcelToSegment.from_json(p) for p in segment]
    by_target = {m.target: m for m in models}
    if len(by_target) != len(models):
        raise AlanError("two --segment models have the same target")
    work_size = int(models[0].provenance_.get("work_size", 112))
    parcellator = load_parcellator(backbone, head, work_size)
    record = open_dataset(video, "videos").records[0]
    knn = WeightedKNN.load(views) if views is not None else None
    s = analyze_record(record, parcellator, by_target, out, knn=knn)
    ef = "n/a" if s["ef_percent"] is None else f"{s['ef_percent']:.1f}%"
    view = f", view {s['view']}" if "view" in s else ""
    console.print(f"{record.id}: {s['frames']} frames, ED {s['ed_frames']}, ES {s['es_frames']}, EF {ef}{view} -> {out}")


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
