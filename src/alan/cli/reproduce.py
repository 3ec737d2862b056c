"""`alan reproduce alan`: the ALAN paper's protocol on EchoNet-Dynamic, CAMUS and TMED-2."""

from __future__ import annotations

from pathlib import Path

import typer

from alan.cli._options import parse_devices

reproduce_app = typer.Typer(help="Reproduce a paper's protocol and print our tables beside the paper's.", no_args_is_help=True)


@reproduce_app.command("alan")
def alan(
    echonet: Path = typer.Option(None, "--echonet", help="EchoNet-Dynamic root (RAPTOR on TRAIN, fit VAL, test TEST)."),
    camus: Path = typer.Option(None, "--camus", help="CAMUS root (fit training, test testing)."),
    tmed2: Path = typer.Option(None, "--tmed2", help="TMED-2 root (kNN bank on train, test on test)."),
    out: Path = typer.Option(Path("reproduce-alan"), "--out"),
    backbone: Path = typer.Option(None, "--backbone", help="A locked backbone artifact to use."),
    dino_weights: Path = typer.Option(None, "--dino-weights", help="Official DINO weights (e.g. dino_deitsmall8_pretrain.pth)."),
    arch: str = typer.Option("vit_small_p4_112", "--arch", help="Architecture to train on EchoNet TRAIN when no backbone is given."),
    dino_epochs: int = typer.Option(40, "--dino-epochs"),
    k: int = typer.Option(64, "--k", help="Parcels K (paper's best: 64 EchoNet, 112 CAMUS)."),
    raptor_epochs: int = typer.Option(40, "--raptor-epochs"),
    raptor_max_steps: int = typer.Option(-1, "--raptor-max-steps"),
    accelerator: str = typer.Option("auto", "--accelerator"),
    devices: str = typer.Option("auto", "--devices"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Backbone -> RAPTOR on EchoNet TRAIN -> parcel-to-segment -> kNN views, tables beside the paper's."""
    from alan.pipelines.reproduce import reproduce_alan

    if not (echonet or camus or tmed2):
        raise typer.BadParameter("give at least one of --echonet, --camus, --tmed2")
    reproduce_alan(out, echonet=echonet, camus=camus, tmed2=tmed2, backbone=backbone, dino_weights=dino_weights, arch=arch,
                   dino_epochs=dino_epochs, k=k, raptor_epochs=raptor_epochs, raptor_max_steps=raptor_max_steps,
                   accelerator=accelerator, devices=parse_devices(devices), seed=seed)


def register(app: typer.Typer) -> None:
    app.add_typer(reproduce_app, name="reproduce")
