"""Evaluation metrics of both papers: DICE per frame, accuracy per class, confusion matrix,
macro one-vs-rest AUC, and the area-length ejection fraction.

Conventions:
- `dice` of two empty masks is 1.0 (a correct "nothing there"), as in the ALAN reference code.
- `dice_summary` reports mean and population std (ddof=0, numpy's default and the reference's
  np.nanstd) over frames, as the paper's "mean +- std" tables.
- Per-class accuracy is the fraction of a class's samples predicted as that class (recall), the
  per-view numbers of the ALAN paper's Table 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix
from sklearn.metrics import roc_auc_score

from alan.errors import AlanError


def dice(pred: Any, target: Any) -> np.ndarray | float:
    """DICE = 2|A & B| / (|A| + |B|) over the last two axes: (N,H,W) -> (N,), (H,W) -> float.
    Two empty masks score 1.0."""
    a, b = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"prediction shape {a.shape} != target shape {b.shape}")
    if a.ndim < 2:
        raise ValueError(f"masks must be (..., H, W), got shape {a.shape}")
    inter = np.count_nonzero(a & b, axis=(-2, -1))
    total = np.count_nonzero(a, axis=(-2, -1)) + np.count_nonzero(b, axis=(-2, -1))
    out = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
    return float(out) if out.ndim == 0 else out


def dice_summary(scores: Any) -> dict[str, float]:
    """{"mean", "std" (ddof=0), "n"} of per-frame DICE scores."""
    s = np.asarray(scores, dtype=float).ravel()
    if s.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(s.mean()), "std": float(s.std()), "n": int(s.size)}


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Overall fraction of correct predictions."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p)) if len(t) else float("nan")


def per_class_accuracy(y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None) -> dict[Any, float]:
    """{class: fraction of that class's samples predicted correctly}; NaN for a class without
    samples. Classes: `labels`, or the sorted union of both inputs."""
    t, p = _pair(y_true, y_pred)
    classes = list(labels) if labels is not None else list(np.unique(np.concatenate([t, p])))
    out = {}
    for c in classes:
        sel = t == c
        out[_py(c)] = float(np.mean(p[sel] == c)) if sel.any() else float("nan")
    return out


def confusion_matrix(y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class (sklearn's convention)."""
    t, p = _pair(y_true, y_pred)
    return _sk_confusion_matrix(t, p, labels=None if labels is None else list(labels))


def macro_auc(y_true: Any, proba: Any, classes: Sequence[Any], absent: str = "raise") -> float:
    """Macro-averaged one-vs-rest ROC AUC of class probabilities (rows sum to 1); `proba`
    columns follow `classes` (e.g. an estimator's `classes_`).

    A class with no sample in `y_true` has no AUC: `absent="raise"` (default) raises an
    `AlanError` naming it; `absent="skip"` averages over the classes present (a small held-out
    part during model selection) and gives NaN when fewer than two are present; there, samples
    of a label outside `classes` (a model fitted on a fold without it) count as negatives. With every
    class present both equal ``roc_auc_score(y, proba, multi_class="ovr", average="macro")``."""
    if absent not in ("raise", "skip"):
        raise ValueError(f"absent must be 'raise' or 'skip', got {absent!r}")
    t = np.asarray(y_true)
    s = np.asarray(proba, dtype=float)
    classes = list(classes)
    if s.ndim != 2 or s.shape != (len(t), len(classes)):
        raise ValueError(f"proba must be (n_samples={len(t)}, n_classes={len(classes)}), got {s.shape}")
    present = set(np.unique(t).tolist())
    unknown = present - {_py(c) for c in classes}
    if unknown and absent == "raise":
        raise AlanError(f"macro AUC: labels {sorted(map(str, unknown))} are not among the classes {classes}")
    missing = [c for c in classes if _py(c) not in present]
    if missing and absent == "raise":
        raise AlanError(
            f"macro AUC is undefined: class(es) {[_py(c) for c in missing]} have no sample in y_true "
            f"({len(t)} samples)"
        )
    if len(classes) - len(missing) < 2:
        return float("nan")
    if len(classes) == 2:
        return float(roc_auc_score(t == classes[1], s[:, 1]))
    if not missing and not unknown:
        return float(roc_auc_score(t, s, multi_class="ovr", average="macro", labels=classes))
    return float(np.mean([roc_auc_score(t == c, s[:, i]) for i, c in enumerate(classes) if c not in missing]))


def area_length_volume(area: Any, length: Any) -> np.ndarray | float:
    """Single-plane area-length volume V = 8 A^2 / (3 pi L) (A in mm^2, L in mm -> V in mm^3)."""
    v = 8.0 * np.asarray(area, dtype=float) ** 2 / (3.0 * np.pi * np.asarray(length, dtype=float))
    return float(v) if v.ndim == 0 else v


def ejection_fraction(edv: Any, esv: Any) -> np.ndarray | float:
    """EF = (EDV - ESV) / EDV, as a fraction (multiply by 100 for %)."""
    edv, esv = np.asarray(edv, dtype=float), np.asarray(esv, dtype=float)
    ef = (edv - esv) / edv
    return float(ef) if ef.ndim == 0 else ef


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} entries, y_pred {len(p)}")
    return t, p


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
