"""`alan views fit|eval`: weighted-kNN view classification on locked-backbone CLS features."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

views_app = typer.Typer(help="View classification by weighted kNN (ALAN, DINO eval_knn).", no_args_is_help=True)
console = Console()


@views_app.command("fit")
def fit(
    backbone: Path = typer.Option(..., "--backbone", help="Locked backbone artifact folder."),
    data: Path = typer.Option(..., "--data", help="Dataset with view labels (TMED-2, or any labelled format)."),
    out: Path = typer.Option(..., "--out", help="Bank artifact folder to write."),
    split: str = typer.Option("train", "--split"),
    format: str = typer.Option("auto", "--format"),
    k: int = typer.Option(20, "--k", help="Default k stored with the bank (DINO: 20; paper: 2 and 10)."),
) -> None:
    """Store the L2-normalised CLS features of SPLIT as the kNN bank."""
    from alan.cli._options import select_records
    from alan.models.backbones import load_backbone
    from alan.pipelines.views import fit_views

    _, records = select_records(data, format, split)
    knn = fit_views(load_backbone(backbone), records, k=k, progress=True)
    digest = knn.save(out)
    console.print(f"bank of {len(knn.bank_)} x {knn.bank_.shape[1]} ({', '.join(map(str, knn.classes_))}) -> {out} [{digest}]")


@views_app.command("eval")
def evaluate(
    bank: Path = typer.Option(..., "--bank", help="Bank artifact from `alan views fit`."),
    backbone: Path = typer.Option(..., "--backbone"),
    data: Path = typer.Option(..., "--data"),
    split: str = typer.Option("test", "--split"),
    format: str = typer.Option("auto", "--format"),
    k: list[int] = typer.Option([2, 10, 20], "--k", help="Values of k to evaluate (repeat the option)."),
    figures: Path = typer.Option(None, "--figures", help="Folder for the confusion-matrix PNG."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per-class and overall accuracy for each k (the layout of the paper's Table 3)."""
    import numpy as np

    from alan.cli._options import select_records
    from alan.downstream.knn import WeightedKNN
    from alan.models.backbones import load_backbone
    from alan.pipelines.views import evaluate_views
    from alan.reports.figures import confusion

    knn = WeightedKNN.load(bank)
    _, records = select_records(data, format, split)
    result = evaluate_views(knn, load_backbone(backbone), records, ks=k, progress=not as_json)
    if figures is not None:
        for kk, r in result["by_k"].items():
            path = confusion(np.array(r["confusion"]), result["classes"], Path(figures) / f"confusion_k{kk}.png", title=f"k={kk}")
            result.setdefault("figures", []).append(str(path))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    console.print(views_table(result))


def views_table(result: dict) -> Table:
    from alan.pipelines.views import PAPER_TABLE3

    classes = result["classes"]
    table = Table(title=f"View accuracy [%] ({result['n_test']} test images, bank {result['n_bank']})")
    table.add_column("model")
    for c in [*classes, "overall"]:
        table.add_column(c, justify="right")
    for k, r in result["by_k"].items():
        table.add_row(f"ours, k={k}", *[f"{r['per_class'][c] * 100:.2f}" for c in classes], f"{r['accuracy'] * 100:.2f}")
    for name, row in PAPER_TABLE3.items():
        table.add_row(f"paper: {name}", *[f"{row[c]:.2f}" if c in row else "" for c in classes], f"{row['overall']:.2f}")
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(views_app, name="views")
