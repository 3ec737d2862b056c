"""`reproduce_alan`: the paper's protocol on the real datasets (or phantoms in their formats)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from alan.artifacts import atomic_write_json
from alan.errors import AlanError
from alan.pipelines.protocol import RECIPES, ProtocolConfig, Timer, run_protocol


def reproduce_alan(out: str | Path, *, echonet: Path | None, camus: Path | None, tmed2: Path | None,
                   backbone: Path | None = None, dino_weights: Path | None = None, arch: str = "vit_small_p4_112",
                   dino_epochs: int = 40, k: int = 64, raptor_epochs: int = 40, raptor_max_steps: int = -1,
                   accelerator: str = "auto", devices: Any = "auto", seed: int = 0, head: Path | None = None,
                   train_backbone: bool = False, recipe: str | None = None,
                   console: Console | None = None) -> dict[str, Any]:
    """Backbone (given, imported from official DINO weights, trained on EchoNet TRAIN with
    `train_backbone`, or else the one shipped with alan together with its head) -> protocol.
    `head` given (or shipped): RAPTOR is not retrained. `recipe`: "paper" or "shipped" (default:
    "shipped" with the shipped pair or a given head trained with the grid position, as the shipped
    one was; else "paper")."""
    from alan.data import open_dataset
    from alan.models.backbones import load_backbone
    from alan.pipelines.protocol import flatten_segmentation
    from alan.reports.protocol import print_summary, write_report

    console = console or Console()
    out = Path(out)
    timer = Timer(console)
    run = {"accelerator": accelerator, "devices": devices}
    trained_head = None
    with timer.stage("backbone"):
        if backbone is None and dino_weights is None and not train_backbone:
            from alan.models.backbones import bundled_backbone
            from alan.models.raptor import bundled_head

            backbone, head = bundled_backbone(), head or bundled_head()
            recipe = recipe or "shipped"
            console.print(f"note: using the backbone and RAPTOR head shipped with alan ({Path(head).name}, trained on "
                          "the built-in phantoms); --train-backbone or --dino-weights for the paper's backbone")
        if backbone is not None:
            bb = load_backbone(backbone)
        elif dino_weights is not None:
            from alan.models.backbones import save_backbone
            from alan.models.weights import import_backbone

            save_backbone(import_backbone(dino_weights, "vit_small_p8_224"), out / "backbone",
                          meta={"source": f"imported from {dino_weights}"})
            bb = load_backbone(out / "backbone")
        else:
            if echonet is None:
                raise AlanError("training a backbone needs --echonet (its TRAIN frames), or give --backbone / --dino-weights")
            from alan.models.dino import DINOConfig, train_dino
            from alan.training import RunOptions

            ds = open_dataset(echonet, "echonet")
            opts = RunOptions(max_epochs=dino_epochs, batch_size=64, seed=seed, **run)
            train_dino(ds.split("train"), DINOConfig(arch=arch), opts, out / "dino", out / "backbone",
                       format="echonet", data_root=echonet, command="alan reproduce alan")
            bb = load_backbone(out / "backbone")
    if recipe is not None and recipe not in RECIPES:
        raise AlanError(f"unknown recipe {recipe!r}; expected one of {', '.join(RECIPES)}")
    if head is not None:
        from alan.models.raptor import load_head

        trained_head = load_head(head, backbone=bb)
        if recipe is None and getattr(trained_head, "position", 0.0) > 0:
            recipe = "shipped"  # the paper's downstream would throw away what such a head was made for
            console.print(f"note: the head sees the grid position (weight {trained_head.position:g}): using the "
                          "shipped recipe; --recipe paper for the paper's")
    recipe = recipe or "paper"
    cfg = ProtocolConfig(n_parcels=k, raptor_epochs=raptor_epochs, raptor_max_steps=raptor_max_steps, seed=seed, run=run,
                         **RECIPES[recipe])
    results = run_protocol(bb, out, echonet=echonet, camus=camus, tmed2=tmed2, config=cfg, console=console, timer=timer,
                           head=trained_head)
    results["recipe"] = {"name": recipe, **RECIPES[recipe]}
    results["segmentation"] = flatten_segmentation(results["segmentation"])
    results["stages_s"] = timer.times
    results["total_s"] = round(sum(timer.times.values()), 1)
    atomic_write_json(out / "results.json", results)
    write_report(results, out / "report.html", title="alan reproduce alan: the ALAN paper's protocol")
    print_summary(results, console, "Reproduce summary")
    return results
