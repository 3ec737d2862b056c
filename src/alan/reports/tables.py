"""Text tables (rich) of segmentation and view results, shared by the CLI, the demo and reproduce."""

from __future__ import annotations

from rich.table import Table


def segmentation_table(report: dict, fmt: str) -> Table:
    from alan.pipelines.segment import PAPER_TABLE2

    table = Table(title=f"DICE [%] on {fmt} ({report['n_frames']} frames)")
    class_set = report.get("class_set_oracle")  # only when the model was fitted in this run
    baseline = report.get("baseline")
    cols = ["target", "phase", "ours mean ± std", "n"]
    cols += ["constant mask (mean fitting mask)"] if baseline else []
    cols += ["oracle (best union of the frame's regions)"]
    cols += ["best class set (fitted on the fitting set)"] if class_set else []
    for col in [*cols, "paper (echo DINO, K=64)"]:
        table.add_column(col, justify="right" if col != "target" else "left")
    pct = lambda v: "" if v is None else f"{v * 100:.2f}"  # noqa: E731
    for target, phases in report["dice"].items():
        for phase, s in phases.items():
            paper = PAPER_TABLE2.get(fmt, {}).get(target, {}).get(phase)
            row = [target, phase, f"{s['mean'] * 100:.2f} ± {s['std'] * 100:.2f}", str(s["n"])]
            row += [pct(baseline.get(target, {}).get(phase))] if baseline else []
            row += [pct(report.get("oracle", {}).get(target, {}).get(phase))]
            row += [pct(class_set.get(target, {}).get(phase))] if class_set else []
            table.add_row(*row, "" if paper is None else f"{paper:.2f}")
    return table


def views_table(result: dict) -> Table:
    """Our accuracies beside the paper's Table 3."""
    from alan.pipelines.views import PAPER_TABLE3

    classes = result["classes"]
    table = Table(title=f"View accuracy [%] ({result['n_test']} test images, bank {result['n_bank']})")
    table.add_column("model")
    for c in [*classes, "overall"]:
        table.add_column(c, justify="right")
    for k, r in result["by_k"].items():
        table.add_row(f"ours, k={k}", *[f"{r['per_class'][c] * 100:.2f}" for c in classes], f"{r['accuracy'] * 100:.2f}")
    if result.get("majority"):
        m = result["majority"]
        table.add_row(f"baseline: always {m['class']} (bank's commonest)",
                      *[f"{m['per_class'][c] * 100:.2f}" for c in classes], f"{m['accuracy'] * 100:.2f}")
    for name, row in PAPER_TABLE3.items():
        table.add_row(f"paper: {name}", *[f"{row[c]:.2f}" if c in row else "" for c in classes], f"{row['overall']:.2f}")
    return table
