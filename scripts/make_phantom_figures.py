"""Regenerate docs/img/phantom_echo.png and docs/img/phantom_cmr.png from the phantom generators.

    .venv/bin/python scripts/make_phantom_figures.py [--out docs/img] [--seed 0]

Echo: one A4C, A2C, PLAX and PSAX sequence, four frames each (ED, mid-systole, ES,
mid-diastole) with the ground-truth contours (LV red, MYO yellow, LA cyan, RV magenta) and, on
the apical ED/ES frames, the EchoNet-style tracing (long axis + 20 chords, green).
CMR: the middle short-axis slice of one patient per ACDC group at ED and ES with the
ground-truth contours (LV red, MYO yellow, RV cyan), and the same ED slice with the spurious
blob of `alan synth acdc --spurious` (arrow).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alan.phantom import GROUPS, VIEWS, cmr_patient, echo_sequence  # noqa: E402

ECHO_COLOURS = {"MYO": "yellow", "LA": "cyan", "RV": "magenta", "LV": "red"}  # LV drawn last
CMR_COLOURS = {"MYO": "yellow", "RV": "cyan", "LV": "red"}


def _contours(ax, masks: dict[str, np.ndarray], colours: dict[str, str]) -> None:
    for name, colour in colours.items():
        m = masks.get(name)
        if m is not None and m.any():
            ax.contour(m.astype(float), [0.5], colors=colour, linewidths=0.7)


def echo_figure(path: Path, seed: int) -> None:
    fig, axes = plt.subplots(len(VIEWS), 4, figsize=(8.4, 8.8))
    for i, view in enumerate(VIEWS):
        s = echo_sequence(view, seed + i, n_frames=64)
        c = s.contraction
        later = np.arange(len(c)) > s.ed
        mid_sys = int(np.argmin(np.abs(c - 0.5) + 10 * ~((np.arange(len(c)) > s.ed) & (np.arange(len(c)) < s.es)))) \
            if s.es > s.ed else int(np.argmin(np.abs(c - 0.5)))
        mid_dia = int(np.argmin(np.abs(c - 0.5) + 10 * ~(later & (np.arange(len(c)) > s.es)))) \
            if (later & (np.arange(len(c)) > s.es)).any() else int(np.argmin(np.abs(c - 0.4)))
        picks = [("ED", s.ed), ("mid-systole", mid_sys), ("ES", s.es), ("diastole", mid_dia)]
        for j, (title, f) in enumerate(picks):
            ax = axes[i, j]
            ax.imshow(s.frames[f], cmap="gray", vmin=0, vmax=255)
            _contours(ax, {k: s.mask(k)[f] for k in ECHO_COLOURS}, ECHO_COLOURS)
            if f in s.tracings:
                tr = s.tracings[f]
                ax.plot(tr[0, [0, 2]], tr[0, [1, 3]], color="lime", lw=0.6)
                for x1, y1, x2, y2 in tr[1:]:
                    ax.plot([x1, x2], [y1, y2], color="lime", lw=0.35)
            ax.set_title(f"{view} {title} (t={f})", fontsize=8)
            ax.set_axis_off()
    fig.suptitle("Echo phantom: views by anatomy; LV red, MYO yellow, LA cyan, RV magenta; tracing green", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmr_figure(path: Path, seed: int) -> None:
    fig, axes = plt.subplots(3, len(GROUPS), figsize=(11, 7))
    for j, group in enumerate(GROUPS):
        c = cmr_patient(group, seed + j)
        z = c.image.shape[0] // 2
        vmax = np.percentile(c.image, 99.5)
        for i, (name, f) in enumerate((("ED", c.ed), ("ES", c.es))):
            ax = axes[i, j]
            ax.imshow(c.image[z, f], cmap="gray", vmin=0, vmax=vmax)
            _contours(ax, {k: c.mask(k)[z, f] for k in CMR_COLOURS}, CMR_COLOURS)
            ef = 100 * (1 - c.volume_ml("LV", c.es) / c.volume_ml("LV", c.ed))
            ax.set_title(f"{group} {name}" + (f"  (LV EF {ef:.0f}%)" if name == "ED" else ""), fontsize=9)
            ax.set_axis_off()
        s = cmr_patient(group, seed + j, spurious="train", spurious_p=1.0)
        ax = axes[2, j]
        ax.imshow(s.image[z, s.ed], cmap="gray", vmin=0, vmax=np.percentile(s.image, 99.9))
        blob = (s.image[z, s.ed] != c.image[z, c.ed])
        if blob.any():
            r, col = np.argwhere(blob).mean(axis=0)
            ax.annotate("", xy=(col, r), xytext=(col + 18 * np.sign(64 - col), r + 18 * np.sign(64 - r)),
                        arrowprops={"arrowstyle": "->", "color": "orange", "lw": 1.2})
        ax.set_title(f"{group} ED, --spurious (site {s.spurious['site']})", fontsize=9)
        ax.set_axis_off()
    fig.suptitle("CMR phantom, middle short-axis slice: LV red, MYO yellow, RV cyan; bottom row: class-coded blob", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "img")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    echo_figure(args.out / "phantom_echo.png", args.seed)
    cmr_figure(args.out / "phantom_cmr.png", args.seed)
    print(f"wrote {args.out / 'phantom_echo.png'} and {args.out / 'phantom_cmr.png'}")


if __name__ == "__main__":
    main()
