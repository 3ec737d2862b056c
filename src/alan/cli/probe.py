"""`alan backbone probe`: does a locked backbone (and head) know the anatomy of a labelled dataset?"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from alan.cli.backbone import backbone_app

console = Console()


@backbone_app.command("probe")
def probe(
    backbone: Path = typer.Option(None, "--backbone", help="Locked backbone artifact (default: the bundled one)."),
    head: Path = typer.Option(None, "--head", help="RAPTOR head artifact: adds parcels per frame and the region / "
                                                   "class-set oracles."),
    data: Path = typer.Option(..., "--data", help="Labelled dataset (EchoNet-Dynamic, CAMUS, ACDC; TMED-2 for views)."),
    format: str = typer.Option("auto", "--format", help="Dataset format (auto detects it)."),
    fit_split: str = typer.Option("val", "--fit-split", help="Split the probes are fitted on."),
    eval_split: str = typer.Option("test", "--eval-split", help="Split the probes are scored on (another one)."),
    work_size: int = typer.Option(112, "--work-size", min=16, help="Square size the frames are brought to."),
    max_patches: int = typer.Option(20000, "--max-patches", min=100, help="Patches sampled per split for the probes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the patch sampling."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Linear / kNN patch probes per structure, a chamber probe, PC1 share, a view probe and, with a
    head, the parcel oracles: fitted on one split, scored on another.

    Example: alan backbone probe --data data/camus --fit-split train --eval-split test --head runs/raptor
    """
    from alan.cli._options import select_records
    from alan.errors import AlanError
    from alan.models.backbones import bundled_backbone, load_backbone
    from alan.models.raptor import load_head
    from alan.pipelines.probe import probe_backbone, probe_rows

    if fit_split == eval_split:
        raise AlanError(f"--fit-split and --eval-split are both {fit_split!r}: score the probes on another split")
    bb = load_backbone(backbone if backbone is not None else bundled_backbone())
    hd = load_head(head, backbone=bb) if head is not None else None
    dataset, fit_records = select_records(data, format, fit_split)
    _, eval_records = select_records(data, format, eval_split)
    result = probe_backbone(bb, fit_records, eval_records, head=hd, work_size=work_size, max_patches=max_patches,
                            seed=seed)
    result.update(data=str(data), format=dataset.format, fit_split=fit_split, eval_split=eval_split)
    if as_json:
        from alan.artifacts import dumps_json

        print(dumps_json(result))
        return
    table = Table(title=f"probe of backbone {result['backbone']} on {dataset.format} ({fit_split} -> {eval_split})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in probe_rows(result):
        table.add_row(name, value)
    console.print(table)


def register(app: typer.Typer) -> None:
    """`probe` is a subcommand of `alan backbone` (defined on its group above)."""
