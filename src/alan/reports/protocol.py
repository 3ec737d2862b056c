"""The report of a protocol run (`alan demo`, `alan reproduce alan`): tables on the console, one HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(results: dict[str, Any], console: Console, title: str = "Summary") -> None:
    from alan.reports.tables import segmentation_table, views_table

    for fmt, rep in results["segmentation"]["by_dataset"].items():
        console.print(segmentation_table(rep, fmt))
    if "views" in results:
        console.print(views_table(results["views"]))
    if "sscl" in results and results["sscl"].get("tables"):
        console.print(results["sscl"]["tables"])
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for target in ("LV", "LA"):
        for phase in ("ED", "ES"):
            s = results["segmentation"].get(target, {}).get(phase)
            if s:
                both = len(results["segmentation"]["by_dataset"]) > 1
                pooled = " (pooled: EchoNet + CAMUS)" if target == "LV" and both else ""
                t.add_row(f"{target} {phase} DICE{pooled}", f"{s['dice_mean']:.3f} ± {s['dice_std']:.3f} (n={s['n']})")
    if "views" in results:
        t.add_row(f"view accuracy (k={results['views']['k']})", f"{results['views']['accuracy']:.3f}")
    for stage, secs in results["stages_s"].items():
        t.add_row(f"time: {stage}", f"{secs:.1f} s")
    t.add_row("time: total", f"{results['total_s']:.1f} s")
    console.print(t)


def add_segmentation(section: Any, fmt: str, r: dict[str, Any]) -> None:
    """One dataset's segmentation report (`segmentation_report`) into an HTML section: the DICE table
    beside the constant-mask baseline, the oracles and the paper, the EF errors, the figures and videos."""
    rows = []
    for target, phases in r["dice"].items():
        for phase, s in phases.items():
            paper = (r.get("paper") or {}).get(target, {}).get(phase)
            rows.append([target, phase, s["mean"], s["std"], s["n"],
                         r.get("baseline", {}).get(target, {}).get(phase), r["oracle"][target].get(phase),
                         r.get("class_set_oracle", {}).get(target, {}).get(phase),
                         None if paper is None else paper / 100])
    section.tables.append((fmt, ["target", "phase", "mean", "std", "n", "constant mask (baseline)", "region oracle",
                                 "best class set", "paper (real data)"], rows))
    if r.get("ef"):
        section.paragraphs.append(f"{fmt} EF ({r['ef']['method']}): MAE vs the dataset's EF "
                                  f"{r['ef']['mae_pred_vs_reference']:.1f} points (median "
                                  f"{r['ef']['median_ae_pred_vs_reference']:.1f}; {r['ef']['n_pred_implausible']} of "
                                  f"{r['ef']['n']} predicted EFs outside 0-100 %); with ground-truth masks "
                                  f"{r['ef']['mae_truth_masks_vs_reference']:.1f}.")
    for f in r.get("figures", []):
        section.figures.append((Path(f), Path(f).stem.replace("_", " ")))


def write_segmentation_report(report: dict[str, Any], title: str, path: Path) -> Path:
    """One evaluation (`alan segment eval`) as an HTML page, laid out as the protocol's section."""
    from alan.reports.html import Report

    rep = Report(title, intro=f"{report['n_frames']} annotated frames.")
    add_segmentation(rep.section("DICE"), report["format"], report)
    return rep.write(path)


def write_report(results: dict[str, Any], path: Path, title: str = "alan demo on the built-in phantoms") -> Path:
    from alan.reports.html import Report

    rep = Report(title,
                 intro=f"backbone {results['backbone'].get('arch')} [{results['backbone'].get('hash')}], "
                       f"RAPTOR K={results.get('raptor', {}).get('K')} [{results.get('raptor', {}).get('hash')}]. "
                       "All numbers are on held-out test records of synthetic data.")
    seg = rep.section("Segmentation (parcel-to-segment), DICE")
    for fmt, r in results["segmentation"]["by_dataset"].items():
        add_segmentation(seg, fmt, r)
    if "views" in results:
        v = results["views"]
        sec = rep.section("View classification (weighted kNN), accuracy")
        rows = [[f"k={k}", *[r["per_class"][c] for c in v["classes"]], r["accuracy"]] for k, r in v["by_k"].items()]
        sec.tables.append(("TMED-2 phantom test split", ["k", *v["classes"], "overall"], rows))
        for f in v.get("figures", []):
            sec.figures.append((Path(f), "confusion matrix"))
    if "sscl" in results:
        s = results["sscl"]
        sec = rep.section("SSCL with anatomic priors (macro AUC)")
        if s.get("tables"):
            sec.paragraphs.append(s["tables"])
        for f in s.get("figures", []):
            sec.figures.append((Path(f), Path(f).stem.replace("_", " ")))
    times = rep.section("Time per stage")
    times.tables.append(("seconds", ["stage", "s"], [[k, v] for k, v in results["stages_s"].items()] + [["total", results["total_s"]]]))
    return rep.write(path)
