"""`alan views fit|eval`: weighted-kNN view classification on locked-backbone CLS features."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from alan.cli._options import Device, device_option, out_dir
from alan.reports.tables import views_table

views_app = typer.Typer(help="View classification by weighted kNN (ALAN, DINO eval_knn).", no_args_is_help=True)
console = Console()


@views_app.command("fit")
def fit(
    backbone: Path = typer.Option(..., "--backbone", help="Locked backbone artifact folder."),
    data: Path = typer.Option(..., "--data", help="Dataset with view labels (TMED-2, or any labelled format)."),
    out: Path = out_dir("Bank artifact folder to write."),
    split: str = typer.Option("train", "--split", help="Split(s) whose images form the bank, comma-separated, or 'all'."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    k: int = typer.Option(20, "--k", min=1, help="Default k stored with the bank (DINO: 20; paper: 2 and 10)."),
    features: str = typer.Option("cls", "--features", help="cls (the CLS token, the paper's) or grid (patch tokens "
                                                          "averaged on a 7 x 7 grid, beyond the paper); eval uses the "
                                                          "bank's."),
    input_size: int = typer.Option(None, "--input-size", min=1,
                                   help="Size (px) the frames go to the backbone at, a multiple of its patch size "
                                        "(default: the backbone's own; beyond the paper), e.g. 224; eval and analyze "
                                        "use the bank's."),
    device: Device = "auto",
) -> None:
    """Store the L2-normalised view features (CLS by default) of SPLIT as the kNN bank.

    Example:

        alan views fit --backbone runs/dino --data data/tmed2 --out bank/
    """
    from alan.cli._options import select_records
    from alan.errors import AlanError
    from alan.models.backbones import load_backbone
    from alan.pipelines.views import FEATURES, bank_input_size, fit_views

    if features not in FEATURES:
        raise AlanError(f"--features must be one of {', '.join(FEATURES)}, got {features!r}")
    bb = load_backbone(backbone, device=device_option(device))
    if input_size is not None:
        bb.grid_at(input_size)  # a size off the patch grid: one line, before the data is read
    _, records = select_records(data, format, split)
    knn = fit_views(bb, records, k=k, progress=True, features=features, input_size=input_size)
    digest = knn.save(out)
    console.print(f"bank of {len(knn.bank_)} x {knn.bank_.shape[1]} ({', '.join(map(str, knn.classes_))}), {features} "
                  f"features at {bank_input_size(knn)} px -> {out} [{digest}]")


@views_app.command("eval")
def evaluate(
    bank: Path = typer.Option(..., "--bank", help="Bank artifact from `alan views fit`."),
    backbone: Path = typer.Option(..., "--backbone", help="Locked backbone artifact the bank was built with."),
    data: Path = typer.Option(..., "--data", help="Dataset with view labels to score on."),
    split: str = typer.Option("test", "--split", help="Split(s) to score, comma-separated, or 'all'."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    k: list[int] = typer.Option([2, 10, 20], "--k", min=1, help="Values of k to evaluate (repeat the option)."),
    figures: Path = out_dir("Folder for the confusion-matrix PNG.", None, "--figures"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    device: Device = "auto",
) -> None:
    """Per-class and overall accuracy for each k (the layout of the paper's Table 3), on the view
    features the bank was fitted on (its kind and input size).

    Example:

        alan views eval --bank bank/ --backbone runs/dino --data data/tmed2 --k 2 --k 10
    """
    import numpy as np

    from alan.cli._options import select_records
    from alan.downstream.knn import WeightedKNN
    from alan.models.backbones import load_backbone
    from alan.pipelines.views import evaluate_views
    from alan.reports.figures import confusion

    knn = WeightedKNN.load(bank)
    _, records = select_records(data, format, split)
    result = evaluate_views(knn, load_backbone(backbone, device=device_option(device)), records, ks=k, progress=not as_json)
    if figures is not None:
        for kk, r in result["by_k"].items():
            path = confusion(np.array(r["confusion"]), result["classes"], Path(figures) / f"confusion_k{kk}.png", title=f"k={kk}")
            result.setdefault("figures", []).append(str(path))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    console.print(views_table(result))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(views_app, name="views")
