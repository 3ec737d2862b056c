"""`alan reproduce alan`: the ALAN paper's protocol on EchoNet-Dynamic, CAMUS and TMED-2."""

from __future__ import annotations

from pathlib import Path

import typer

from alan.cli._options import AcceleratorAlias, Device, Devices, accelerator, out_dir, parse_devices

reproduce_app = typer.Typer(help="Reproduce a paper's protocol and print our tables beside the paper's.", no_args_is_help=True)


@reproduce_app.command("alan")
def alan(
    echonet: Path = typer.Option(None, "--echonet", help="EchoNet-Dynamic root (RAPTOR on TRAIN, fit VAL, test TEST)."),
    camus: Path = typer.Option(None, "--camus", help="CAMUS root (fit training, test testing; the 2019 release, whose "
                               "testing ground truth is withheld, is scored on held-out training patients)."),
    tmed2: Path = typer.Option(None, "--tmed2", help="TMED-2 root (kNN bank on train, test on test)."),
    out: Path = out_dir("Output folder: backbone/, raptor/, models/, figures/, results.json, report.html.",
                        Path("reproduce-alan")),
    backbone: Path = typer.Option(None, "--backbone", help="A locked backbone artifact to use (default: the one shipped "
                                                           "with alan, with its head, unless --train-backbone or "
                                                           "--dino-weights)."),
    head: Path = typer.Option(None, "--head", help="A RAPTOR head trained on that backbone: used as is, not retrained."),
    train_backbone: bool = typer.Option(False, "--train-backbone", help="Train the paper's DINO backbone (--arch) on "
                                                                        "EchoNet TRAIN first (days without a GPU)."),
    recipe: str = typer.Option(None, "--recipe", help="paper (the ALAN paper's protocol) or shipped (adds the position "
                                                      "head at 224 px, the location-prior component and support, masks "
                                                      "cut at bright pixels, and grid view features at 224 px); "
                                                      "default: shipped with the shipped models or a given head "
                                                      "that sees the grid position, else paper."),
    dino_weights: Path = typer.Option(None, "--dino-weights", help="Official DINO weights (e.g. dino_deitsmall8_pretrain.pth)."),
    arch: str = typer.Option("vit_small_p4_112", "--arch", help="Architecture to train on EchoNet TRAIN when no backbone is given."),
    dino_epochs: int = typer.Option(40, "--dino-epochs", min=1, help="DINO epochs when the backbone is trained here (paper: 40-50)."),
    k: int = typer.Option(64, "--k", min=2, help="Parcels K (paper's best: 64 EchoNet, 112 CAMUS)."),
    raptor_epochs: int = typer.Option(40, "--raptor-epochs", min=1, help="RAPTOR epochs (paper: the loss saturates at ~40)."),
    raptor_max_steps: int = typer.Option(-1, "--raptor-max-steps", min=-1, help="Stop RAPTOR after this many steps (-1: no limit)."),
    device: Device = "auto",
    accelerator_alias: AcceleratorAlias = None,
    devices: Devices = "auto",
    seed: int = typer.Option(0, "--seed", help="Seed of every training and sampling step."),
) -> None:
    """Backbone -> RAPTOR on EchoNet TRAIN -> parcel-to-segment -> kNN views, tables beside the paper's.

    Without --backbone, --dino-weights or --train-backbone the backbone and head shipped with alan
    are used (said in one line). --train-backbone trains the paper's ViT-S/4 on EchoNet TRAIN first
    (days without a GPU); each training prints its number of steps and a measured time estimate.

    Example:

        alan reproduce alan --echonet EchoNet-Dynamic --camus CAMUS --tmed2 TMED-2 --dino-weights dino_deitsmall8_pretrain.pth
    """
    from alan.pipelines.reproduce import reproduce_alan

    if not (echonet or camus or tmed2):
        raise typer.BadParameter("give at least one of --echonet, --camus, --tmed2")
    reproduce_alan(out, echonet=echonet, camus=camus, tmed2=tmed2, backbone=backbone, dino_weights=dino_weights, arch=arch,
                   dino_epochs=dino_epochs, k=k, raptor_epochs=raptor_epochs, raptor_max_steps=raptor_max_steps,
                   accelerator=accelerator(device, accelerator_alias), devices=parse_devices(devices), seed=seed,
                   head=head, train_backbone=train_backbone, recipe=recipe)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(reproduce_app, name="reproduce")
