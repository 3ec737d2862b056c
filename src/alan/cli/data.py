"""`alan data` commands: look at a dataset in its public on-disk format."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path

import typer

data_app = typer.Typer(help="Read datasets in their public formats (EchoNet, CAMUS, TMED-2, ACDC, videos).",
                       no_args_is_help=True)


class Format(str, Enum):
    auto = "auto"
    echonet = "echonet"
    camus = "camus"
    tmed2 = "tmed2"
    acdc = "acdc"
    videos = "videos"


@data_app.command("inspect")
def inspect(
    path: Path = typer.Argument(..., help="Dataset folder (or a single video/DICOM file)."),
    format: Format = typer.Option(Format.auto, "--format", "-f", help="Dataset format; auto detects it."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object to stdout."),
    items: bool = typer.Option(False, "--items", help="Also list every record."),
    decode: bool = typer.Option(False, "--decode", help="Decode every record's frames to check them."),
) -> None:
    """Summarise a dataset: items, splits, classes, annotated frames, mask pixels.

    Example:

        alan data inspect data/echonet --json
    """
    from alan.data import open_dataset
    from alan.data.summary import summarize

    summary = summarize(open_dataset(path, format.value), items=items, decode=decode)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        _print(summary)


def _print(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    overview = Table(title=f"{s['format']} dataset at {s['root']}", show_header=False)
    overview.add_column(style="bold")
    overview.add_column(justify="right")
    for key in ("items", "patients", "frames", "annotated_frames", "decoded_frames"):
        if key in s:
            overview.add_row(key.replace("_", " "), str(s[key]))
    console.print(overview)
    for key, title in (("splits", "split"), ("classes", "class"), ("mask_pixels", "mask label"),
                       ("skipped", "skipped")):
        if s[key]:
            t = Table(show_header=True)
            t.add_column(title)
            t.add_column("pixels" if key == "mask_pixels" else "count", justify="right")
            for name, count in s[key].items():
                t.add_row(str(name), str(count))
            console.print(t)
    if "records" in s:
        t = Table(title="records")
        for col in ("id", "split", "frames", "height", "width", "ed", "es", "label"):
            t.add_column(col, justify="left" if col in ("id", "split", "label") else "right")
        for r in s["records"]:
            t.add_row(*("" if r[c] is None else str(r[c])
                        for c in ("id", "split", "frames", "height", "width", "ed", "es", "label")))
        console.print(t)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(data_app, name="data")
