"""The SSCL grid as the paper shows it: Tables 1-3 as text and Figure 1 (convergence).

Nakashima et al., *Interaction of a priori anatomic knowledge with self-supervised contrastive
learning in cardiac MRI*, section 5: Table 1 (full input), Table 2 (segmented input), Table 3
(pre-training input x downstream input), Figure 1 (downstream training curves). Both read the
result dictionary of `alan.pipelines.sscl.run_grid`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alan.artifacts import atomic_write_bytes

#: What the paper's tables call each pre-training, in the order of their columns.
TITLES = {"none": "None", "imagenet": "ImageNet", "sscl-full": "Full-SSCL", "sscl-segmented": "Segmented-SSCL"}


def _cell(result: Mapping[str, Any], arch: str, pre: str, inp: str, key: str = "auc") -> str:
    skipped = result.get("skipped", {}).get(arch, {}).get(pre)
    if skipped:
        return "skipped"
    mean = result.get(key, {}).get(arch, {}).get(pre, {}).get(inp)
    if mean is None:
        return "-"
    std = result.get(key.replace("auc", "std"), {}).get(arch, {}).get(pre, {}).get(inp)
    txt = f"{mean:.3f}" + (f"±{std:.3f}" if std is not None else "")
    paper = (result.get("paper") or {}).get(arch, {}).get(inp, {}).get(pre)
    if paper is not None and key == "auc":
        txt += f" (paper {paper:.3f})"
    return txt


def text_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A left-aligned plain-text table under `title`."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Sequence[Any]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths))

    return "\n".join([title, line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def format_tables(result: Mapping[str, Any]) -> str:
    """The paper's three tables (mean±std over seeds; the paper's ACDC numbers beside ours when the
    data is ACDC), plus the same for the external test set when there is one."""
    archs = list(result["auc"])
    pres = [p for p in TITLES if any(p in result["auc"][a] or p in result["skipped"].get(a, {}) for a in archs)]
    level = result["config"]["level"]
    out = []
    keys = [("auc", f"held-out 30% of the pool, {level}-level macro AUC")]
    if result["data"].get("n_external_slices"):
        keys.append(("external_auc", f"external test split ({result['data']['n_external_patients']} patients), "
                                     f"{level}-level macro AUC"))
    for key, what in keys:
        tag = "" if key == "auc" else " [external]"
        for n, inp in ((1, "full"), (2, "segmented")):
            if inp not in result["config"]["inputs"]:
                continue
            out.append(text_table(f"Table {n}{tag}: AUCs of models trained on {inp} images ({what})",
                                  ["Model", *(TITLES[p] for p in pres)],
                                  [[a, *(_cell(result, a, p, inp, key) for p in pres)] for a in archs]))
            out.append("")
        combos = [(p, i) for p in ("sscl-full", "sscl-segmented") for i in ("full", "segmented")
                  if p in pres and i in result["config"]["inputs"]]
        if combos:
            out.append(text_table(f"Table 3{tag}: pre-training-downstream input ({what})",
                                  ["Model", *(f"{p.split('-')[1].title()}-{i.title()}" for p, i in combos)],
                                  [[a, *(_cell(result, a, p, i, key) for p, i in combos)] for a in archs]))
            out.append("")
    skipped = sorted({m for a in archs for m in result["skipped"].get(a, {}).values()})
    out.extend(f"note: {m}" for m in skipped)
    if result.get("paper") is None:
        out.append("note: the paper's numbers (real ACDC) are shown only when the data is real ACDC")
    return "\n".join(out).rstrip() + "\n"


def plot_convergence(result: Mapping[str, Any], path: str | Path) -> Path:
    """Figure 1: downstream training curves (first seed) per pre-training; solid = full input,
    dashed = segmented input. Top: training loss; bottom: held-out macro AUC per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(result["curves"])
    fig, axes = plt.subplots(2, len(archs), figsize=(5 * len(archs), 6.5), squeeze=False, sharex="col")
    colors = {"none": "tab:gray", "imagenet": "tab:orange", "sscl-full": "tab:blue", "sscl-segmented": "tab:green"}
    for j, arch in enumerate(archs):
        for pre, by_inp in result["curves"][arch].items():
            for inp, c in by_inp.items():
                style = "-" if inp == "full" else "--"
                lab = f"{TITLES.get(pre, pre)} / {inp}"
                axes[0, j].plot(c["train_loss"], style, color=colors.get(pre), label=lab)
                auc = [np.nan if v is None else v for v in c["test_auc"]]
                axes[1, j].plot(auc, style, color=colors.get(pre), label=lab)
        axes[0, j].set_title(arch)
        axes[0, j].set_ylabel("training loss")
        axes[1, j].set_ylabel("held-out macro AUC (slices)")
        axes[1, j].set_xlabel("epoch")
        axes[1, j].set_ylim(0.4, 1.0)
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("Convergence of pre-trained models for downstream classification")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


__all__ = ["TITLES", "format_tables", "plot_convergence", "text_table"]
