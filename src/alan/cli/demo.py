"""`alan demo`: the whole ALAN (+ SSCL) pipeline on the built-in phantoms."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Output folder (data, models, figures, results.json, report.html)."),
    quick: bool = typer.Option(False, "--quick", help="Small phantoms and short training (under 2 minutes on 2 cores)."),
    train_backbone: bool = typer.Option(False, "--train-backbone", help="Retrain the DINO backbone instead of the shipped locked one."),
    backbone_steps: int = typer.Option(300, "--backbone-steps", min=1, help="DINO steps with --train-backbone."),
    train_head: bool = typer.Option(False, "--train-head", help="Retrain the RAPTOR head instead of using the shipped "
                                                                "one (always with --train-backbone or --quick)."),
    sscl: bool = typer.Option(True, "--sscl/--no-sscl", help="Also run the SSCL grid on the CMR phantom."),
    seed: int = typer.Option(0, "--seed", help="Seed of the phantoms and of every training step."),
) -> None:
    """Synthesise phantoms, parcellate, segment LV/LA, classify views, run the SSCL grid; write a report.

    Example:

        alan demo --quick --out demo-out
    """
    from alan.pipelines.demo import DemoConfig, run_demo

    run_demo(out, DemoConfig(quick=quick, seed=seed, train_backbone=train_backbone, backbone_steps=backbone_steps,
                              train_head=train_head, sscl=sscl))
    typer.echo(f"results: {out / 'results.json'}  report: {out / 'report.html'}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("demo")(demo)
