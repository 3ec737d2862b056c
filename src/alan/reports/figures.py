"""Matplotlib figures of the papers: DICE histograms (ALAN Fig. 3), best/worst overlays with
parcel contours (Figs. 4-5), confusion matrices, LV area curves. Every function writes one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

from alan.artifacts import atomic_file
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries


def _subplots(*args, figsize: tuple[float, float], **kwargs):
    """pyplot.subplots without pyplot: no global backend switch, nothing left in pyplot's registry."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def dice_histogram(groups: dict[str, np.ndarray], path: str | Path, title: str = "DICE") -> Path:
    """One histogram panel per group (e.g. "LV ED"), as the paper's Figure 3."""
    n = max(1, len(groups))
    fig, axes = _subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
    for ax, (name, scores) in zip(axes[0], groups.items()):
        ax.hist(np.asarray(scores) * 100, bins=np.linspace(0, 100, 21), color="#4c72b0", edgecolor="white")
        ax.set_title(f"{name} (n={len(scores)})", fontsize=9)
        ax.set_xlabel("DICE [%]")
    axes[0][0].set_ylabel("frames")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _unit(image: np.ndarray) -> np.ndarray:
    """A gray image rescaled to [0, 1] (min-max) as float32."""
    g = image.astype(np.float32)
    return (g - g.min()) / max(float(g.max() - g.min()), 1e-6)


def overlay_rgb(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray | None) -> np.ndarray:
    """Gray image with truth in blue, prediction in green (overlap turquoise), as Figs. 4-5."""
    g = _unit(image)
    rgb = np.repeat(g[..., None], 3, axis=2) * 0.8
    if truth is not None:
        rgb[truth, 2] = np.clip(rgb[truth, 2] + 0.55, 0, 1)
    if pred is not None:
        rgb[pred, 1] = np.clip(rgb[pred, 1] + 0.55, 0, 1)
    return rgb


def parcel_contours(image: np.ndarray, parcels: np.ndarray) -> np.ndarray:
    g = _unit(image)
    rgb = np.repeat(g[..., None], 3, axis=2)
    rgb[find_boundaries(parcels, mode="inner")] = (0.2, 0.4, 1.0)
    return rgb


def best_worst(images: np.ndarray, parcels: np.ndarray, truth: np.ndarray, pred: np.ndarray, scores: np.ndarray,
               path: str | Path, n: int = 4, labels: Sequence[str] | None = None, title: str = "") -> Path:
    """Top row: the n worst and n best frames with truth/prediction; bottom row: their parcel contours."""
    order = np.argsort(scores)
    pick = list(order[:n]) + list(order[-n:][::-1]) if len(order) > 2 * n else list(order)
    fig, axes = _subplots(2, len(pick), figsize=(1.9 * len(pick), 4.0), squeeze=False)
    for j, i in enumerate(pick):
        axes[0][j].imshow(overlay_rgb(images[i], truth[i], pred[i]))
        name = f"{labels[i]}\n" if labels is not None else ""
        axes[0][j].set_title(f"{name}DICE {scores[i] * 100:.1f}%", fontsize=7)
        axes[1][j].imshow(parcel_contours(images[i], parcels[i]))
        for ax in (axes[0][j], axes[1][j]):
            ax.axis("off")
    fig.suptitle(title or "worst (left) and best (right): truth blue, prediction green; parcel contours below", fontsize=9)
    return _save(fig, path)


def parcel_colors(n_parcels: int) -> np.ndarray:
    """(K, 3) fixed colours, one per parcel id, so a parcel reads the same in every panel."""
    cmap = matplotlib.colormaps["tab20"]
    base = np.array([cmap(i % 20)[:3] for i in range(n_parcels)])
    shade = 1.0 - 0.35 * (np.arange(n_parcels) // 20 % 3)[:, None] / 2  # darker repeats past 20 ids
    return base * shade


def parcel_atlas(images: np.ndarray, parcels: np.ndarray, path: str | Path,
                 masks: np.ndarray | None = None, labels: Sequence[str] | None = None, cols: int = 6,
                 title: str = "") -> Path:
    """Parcel maps of many frames (e.g. several patients at ED and ES) in one colour per parcel id, blended
    with the image, target contour in white: a parcel with a stable meaning has the same colour on the
    same anatomy in every panel (the ALAN paper's Figure 2, coloured by id)."""
    colors = parcel_colors(int(np.max(parcels)) + 1)  # a parcel's colour depends on its id only
    n = len(images)
    cols = max(1, min(cols, n))
    rows = int(np.ceil(n / cols))
    fig, axes = _subplots(rows, cols, figsize=(1.9 * cols, 2.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        rgb = 0.55 * colors[parcels[i]] + 0.45 * _unit(images[i])[..., None]
        if masks is not None:
            rgb[find_boundaries(masks[i], mode="inner")] = 1.0
        ax = axes.ravel()[i]
        ax.imshow(np.clip(rgb, 0, 1))
        if labels is not None:
            ax.set_title(labels[i], fontsize=7)
    fig.suptitle(title or "parcels coloured by id (one colour = one parcel class); target contour white", fontsize=9)
    return _save(fig, path)


def confusion(matrix: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    fig, ax = _subplots(figsize=(3.6, 3.2))
    ax.imshow(matrix, cmap="Blues")
    for (r, c), v in np.ndenumerate(matrix):
        ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=8,
                color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def area_curve(areas: np.ndarray, ed: Sequence[int], es: Sequence[int], path: str | Path, title: str = "LV area") -> Path:
    fig, ax = _subplots(figsize=(6, 2.6))
    ax.plot(areas, color="#4c72b0")
    ax.scatter(list(ed), areas[list(ed)], color="#c44e52", label="ED", zorder=3)
    ax.scatter(list(es), areas[list(es)], color="#55a868", label="ES", zorder=3)
    ax.set_xlabel("frame")
    ax.set_ylabel("area [px]")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
