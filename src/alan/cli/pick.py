"""`alan pick`: an expert parcel picker in the browser that writes a parcel-to-segment model."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def pick(
    data: Path = typer.Argument(..., help="Dataset folder (any format the readers know) or one AVI/MP4/DICOM file."),
    backbone: Path = typer.Option(None, "--backbone", help="Locked backbone artifact (default: the bundled one)."),
    head: Path = typer.Option(None, "--head", help="RAPTOR head artifact or raptor train run folder (default: the "
                                                   "one shipped with alan, with its backbone)."),
    model: Path = typer.Option(None, "--model", help="Model JSON to edit (from `segment fit` or an earlier pick)."),
    target: str = typer.Option(None, "--target", help="Segment to pick (LV, LA, ...); default: the model's, else LV."),
    out: Path = typer.Option(None, "--out", help="Where `save` writes the model JSON (the only file written)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (non-loopback: reachable by others)."),
    port: int = typer.Option(7860, "--port", min=0, max=65535, help="Port to serve on (0: any free port)."),
    by: str = typer.Option(None, "--by", help="Who picks: written to the saved model as picked_by."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    split: str = typer.Option("all", "--split", help="Split(s) to list, comma-separated, or 'all'."),
    work_size: int = typer.Option(112, "--work-size", min=16, help="Square resolution for parcels (a loaded model's wins)."),
) -> None:
    """Open a local web page to define a segment by clicking parcels; `save` writes a `segment fit` model.

    Example:

        alan pick data/echonet --target LV --out lv_picked.json --by "Dr. A"
    """
    from rich.console import Console

    from alan.cli._options import select_records
    from alan.cli.pick_web import create_app, is_loopback, serve
    from alan.downstream.parcel_to_segment import ParcelToSegment
    from alan.pipelines.pick import PathPolicy, PickSession, check_model_output, open_parcellator

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    start = ParcelToSegment.from_json(model) if model is not None else None
    target = target or (start.target if start is not None else "LV")
    if start is not None:
        work_size = int(start.provenance_.get("work_size", work_size))
    if out is not None:
        check_model_output(out)
    dataset, records = select_records(data, format, split)
    parcellator = open_parcellator(backbone, head, work_size)
    if parcellator.note:
        err.print(f"note: {parcellator.note}")
    session = PickSession(records, parcellator, target, start)
    splits: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if r.split and any(f is not None and f in r.annotated for f in (r.ed, r.es)):
            splits.setdefault(r.split, []).append(i)
    given = tuple(p for p in (model, out) if p is not None)
    app = create_app(session, policy=PathPolicy(data, given), out=out, by=by, model_paths=given, splits=splits,
                     hosts=("127.0.0.1", "localhost") if is_loopback(host) else ("*",))
    if not is_loopback(host):
        err.print(f"[yellow]warning:[/] serving on {host}: anyone who can reach this machine can see the data "
                  "and save the model")

    def announce(url: str) -> None:
        typer.echo(f"alan pick: {len(records)} records of {dataset.format}, {target}, K={session.n_parcels}; "
                   f"open {url} (Ctrl+C to stop)")
        sys.stdout.flush()

    serve(app, host, port, announce)


def register(app: typer.Typer) -> None:
    """Add this module's command to the main app."""
    app.command("pick")(pick)
