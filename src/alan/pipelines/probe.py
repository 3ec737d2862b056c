"""Does a locked backbone know the anatomy? Probes of its tokens on a labelled dataset.

Every user of a locked backbone asks this before training anything on top of it. On the
annotated ED/ES frames of a labelled dataset (masks of LV, LA, MYO, RV where present):

- per structure, a *linear* probe (logistic regression) and a *kNN* probe (10 neighbours,
  cosine) on the patch tokens predict whether a patch lies in the structure; the score is
  patch-level DICE (F1 of the positive class) on another split;
- a *chamber* probe: which structure a patch lies in (background or one of the structures,
  multi-class, linear); the score is the macro DICE over the structures, so tokens that only
  know "blood pool" (the same for every chamber) score low;
- the share of the patch tokens' variance on their first principal component (near 1 means
  collapse: every token on one line);
- where records carry a class label (views), a weighted-kNN view probe on the CLS token;
- with a RAPTOR head: parcels used per frame, the per-frame region oracle (best union of the
  frame's own parcel regions) and the class-set oracle (the best set of parcel classes chosen
  on the fitting split, scored on the other split as a plain union).

Probes are fitted on one split and scored on another; nothing is tuned on the scoring split.
A patch lies in a structure when the structure covers at least half of its pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from alan.downstream.parcel_to_segment import class_set_oracle, region_oracle
from alan.errors import AlanError
from alan.metrics import dice
from alan.records import LABELS, Record
from alan.pipelines.segment import PHASES
from alan.transforms.spatial import masks_to_work, to_work

#: Structures the probe looks for, in this order (those present in the data are used).
STRUCTURES: tuple[str, ...] = LABELS


@dataclass
class ProbeFrames:
    """Annotated frames at the working size, with one mask per structure (False where absent)."""

    images: np.ndarray  # uint8 (N, S, S)
    masks: dict[str, np.ndarray]  # structure -> bool (N, S, S)
    labels: list[str | None] = field(default_factory=list)  # the record's class label per frame
    record_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def collect_probe_frames(records: Sequence[Record], work_size: int = 112) -> ProbeFrames:
    """The ED and ES frames of `records` that carry masks; every structure any of them has."""
    images, masks, labels, ids = [], [], [], []
    for rec in records:
        wanted = [getattr(rec, p.lower()) for p in PHASES]
        wanted = [i for i in dict.fromkeys(wanted) if i is not None and i in rec.annotated]
        if not wanted:
            continue
        rec_masks, frames = rec.masks, rec.frames
        for i in wanted:
            if i not in rec_masks or i >= len(frames):
                continue
            images.append(np.asarray(frames[i]))
            masks.append(rec_masks[i])
            labels.append(rec.label)
            ids.append(rec.id)
    present = [s for s in STRUCTURES if any(s in m for m in masks)]
    work = to_work(images, work_size) if images else np.zeros((0, work_size, work_size), np.float32)
    by_structure = {}
    for s in present:
        per = [m[s] if s in m else np.zeros(img.shape[:2], bool) for m, img in zip(masks, images)]
        by_structure[s] = masks_to_work(per, work_size)
    return ProbeFrames(work, by_structure, labels, ids)


def patch_fractions(masks: np.ndarray, grid: int) -> np.ndarray:
    """Fraction of each patch cell covered by the mask: bool (N, S, S) -> float (N, grid * grid)."""
    out = np.stack([cv2.resize(m.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA) for m in masks])
    return out.reshape(len(masks), -1)


def chamber_labels(fractions: dict[str, np.ndarray]) -> np.ndarray:
    """Per patch: 0 = background, i + 1 = the i-th structure, whichever covers most of it (>= 50 %)."""
    names = list(fractions)
    stack = np.stack([fractions[s] for s in names], axis=-1)  # (N, P, S)
    best = stack.argmax(-1)
    return np.where(stack.max(-1) >= 0.5, best + 1, 0)


@torch.no_grad()
def tokens_of(backbone: Any, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(CLS (N, D), patch tokens (N, P, D)) as float32 numpy arrays, one backbone pass."""
    cls, patches = [], []
    for i in range(0, len(images), batch_size):
        c, p = backbone(images[i : i + batch_size])
        cls.append(c.float().cpu().numpy())
        patches.append(p.float().cpu().numpy())
    return np.concatenate(cls), np.concatenate(patches)


def _subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _linear() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0))


def _knn() -> Any:
    return KNeighborsClassifier(n_neighbors=10, metric="cosine", algorithm="brute")


def _patch_dice(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if not y_true.any() and not y_pred.any():
        return 1.0
    return float(f1_score(y_true, y_pred, zero_division=0.0))


def probe_backbone(backbone: Any, fit_records: Sequence[Record], eval_records: Sequence[Record], *,
                   head: Any = None, work_size: int = 112, max_patches: int | None = 20000, seed: int = 0,
                   batch_size: int = 32) -> dict[str, Any]:
    """The probe table of one backbone (and head) on a labelled dataset; see the module docstring."""
    fit = collect_probe_frames(fit_records, work_size)
    test = collect_probe_frames(eval_records, work_size)
    result: dict[str, Any] = {"backbone": getattr(backbone, "hash", None), "head": getattr(head, "hash", None),
                              "n_frames": {"fit": len(fit), "eval": len(test)}}
    if len(fit) and len(test):
        structures = [s for s in fit.masks if s in test.masks and fit.masks[s].any()]
        cls_fit, tok_fit = tokens_of(backbone, fit.images, batch_size)
        cls_test, tok_test = tokens_of(backbone, test.images, batch_size)
        grid = int(round(np.sqrt(tok_fit.shape[1])))
        if grid * grid != tok_fit.shape[1]:
            raise AlanError(f"backbone gives {tok_fit.shape[1]} patch tokens, not a square grid")
        d = tok_fit.shape[-1]
        x_fit, x_test = tok_fit.reshape(-1, d), tok_test.reshape(-1, d)
        i_fit = _subsample(len(x_fit), max_patches, seed)
        i_test = _subsample(len(x_test), max_patches, seed + 1)
        result["pc1_share"] = float(PCA(n_components=1).fit(x_fit[i_fit]).explained_variance_ratio_[0])
        frac_fit = {s: patch_fractions(fit.masks[s], grid).reshape(-1) for s in structures}
        frac_test = {s: patch_fractions(test.masks[s], grid).reshape(-1) for s in structures}
        result["structures"] = {}
        for s in structures:
            y_fit, y_test = frac_fit[s][i_fit] >= 0.5, frac_test[s][i_test] >= 0.5
            row: dict[str, Any] = {"patches_in_fit": int(y_fit.sum()), "patches_in_eval": int(y_test.sum())}
            if y_fit.all() or not y_fit.any():
                row.update(linear=None, knn=None)
            else:
                for name, make in (("linear", _linear), ("knn", _knn)):
                    row[name] = _patch_dice(y_test, make().fit(x_fit[i_fit], y_fit).predict(x_test[i_test]))
            result["structures"][s] = row
        if len(structures) >= 2:
            c_fit = chamber_labels({s: frac_fit[s][i_fit] for s in structures})
            c_test = chamber_labels({s: frac_test[s][i_test] for s in structures})
            pred = _linear().fit(x_fit[i_fit], c_fit).predict(x_test[i_test])
            per = f1_score(c_test, pred, labels=list(range(1, len(structures) + 1)), average=None, zero_division=0.0)
            result["chamber"] = {"macro_dice": float(np.mean(per)),
                                 "per_structure": {s: float(v) for s, v in zip(structures, per)}}
        result["views"] = _view_probe(cls_fit, fit.labels, cls_test, test.labels)
        if head is not None:
            result["parcels"] = _head_probe(backbone, head, fit, test, tok_fit, tok_test, structures, batch_size)
    else:
        result["views"] = None
    if result.get("views") is None:
        result["views"] = _record_view_probe(backbone, fit_records, eval_records, batch_size)
    if not len(fit) and result["views"] is None:
        raise AlanError("nothing to probe: the fitting split has no annotated ED/ES frames and no class labels")
    return result


def _view_probe(cls_fit: np.ndarray, y_fit: list, cls_test: np.ndarray, y_test: list, k: int = 10) -> dict[str, Any] | None:
    from alan.downstream.knn import WeightedKNN

    if any(v is None for v in [*y_fit, *y_test]) or len(set(y_fit)) < 2:
        return None
    knn = WeightedKNN(k=k).fit(cls_fit, np.asarray(y_fit))
    pred = knn.predict(cls_test)
    y = np.asarray(y_test)
    majority = max(set(y_fit), key=list(y_fit).count)
    return {"k": k, "accuracy": float((pred == y).mean()), "majority_class": str(majority),
            "majority_accuracy": float((y == majority).mean()), "n_eval": int(len(y))}


def _record_view_probe(backbone: Any, fit_records: Sequence[Record], eval_records: Sequence[Record],
                       batch_size: int) -> dict[str, Any] | None:
    """Views from one frame per labelled record (datasets with views but no masks, e.g. TMED-2)."""
    from alan.pipelines.views import cls_features, labelled

    fit, test = labelled(fit_records), labelled(eval_records)
    if len({r.label for r in fit}) < 2 or not test:
        return None
    return _view_probe(cls_features(backbone, fit, batch_size), [r.label for r in fit],
                       cls_features(backbone, test, batch_size), [r.label for r in test])


def _parcels(backbone: Any, head: Any, images: np.ndarray, tokens: np.ndarray, batch_size: int) -> np.ndarray:
    """Parcel maps (N, S, S) of work-size images as every command makes them: from the patch
    tokens already computed when the head takes frames at the backbone's own size, else from a
    pass at the head's input size (`compute_tokens_and_logits`)."""
    from alan.models.parcellator import compute_tokens_and_logits, grid_logits, upsample_argmax

    head.eval()
    native = getattr(getattr(backbone, "config", None), "img_size", None)
    if getattr(head, "input_size", None) not in (None, native):
        _, logits = compute_tokens_and_logits(backbone, head, images, batch_size, features=None)
    else:
        device = next(head.parameters()).device
        logits = grid_logits(head, torch.from_numpy(tokens).to(device)).cpu()
    return upsample_argmax(logits, images.shape[-2:])


def _head_probe(backbone: Any, head: Any, fit: ProbeFrames, test: ProbeFrames, tok_fit: np.ndarray,
                tok_test: np.ndarray, structures: list[str], batch_size: int) -> dict[str, Any]:
    p_fit = _parcels(backbone, head, fit.images, tok_fit, batch_size)
    p_test = _parcels(backbone, head, test.images, tok_test, batch_size)
    out: dict[str, Any] = {"K": int(head.n_parcels),
                           "per_frame": float(np.mean([len(np.unique(p)) for p in p_test])),
                           "region_oracle": {}, "class_set_oracle": {}}
    for s in structures:
        if s not in ("LV", "LA"):
            continue
        keep_fit, keep_test = fit.masks[s].any((1, 2)), test.masks[s].any((1, 2))
        if not keep_fit.any() or not keep_test.any():
            continue
        truth = test.masks[s][keep_test]
        out["region_oracle"][s] = float(np.mean(dice(region_oracle(p_test[keep_test], truth), truth)))
        classes, _ = class_set_oracle(p_fit[keep_fit], fit.masks[s][keep_fit])
        out["class_set_oracle"][s] = float(np.mean(dice(np.isin(p_test[keep_test], classes), truth)))
    return out


def probe_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(measure, value) rows of a probe result, for tables."""
    f = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    rows = [("frames (fit / eval)", f"{result['n_frames']['fit']} / {result['n_frames']['eval']}")]
    if "pc1_share" in result:
        rows.append(("token variance on PC1", f(result["pc1_share"])))
    for s, r in result.get("structures", {}).items():
        rows.append((f"{s} patch DICE, linear / kNN", f"{f(r['linear'])} / {f(r['knn'])}"))
    if result.get("chamber"):
        c = result["chamber"]
        rows.append(("chamber probe, macro DICE", f"{f(c['macro_dice'])} ("
                     + ", ".join(f"{s} {f(v)}" for s, v in c["per_structure"].items()) + ")"))
    if result.get("views"):
        v = result["views"]
        rows.append((f"views, CLS kNN k={v['k']}", f"{f(v['accuracy'])} (majority class {f(v['majority_accuracy'])})"))
    if result.get("parcels"):
        p = result["parcels"]
        rows.append((f"parcels used per frame (K={p['K']})", f"{p['per_frame']:.1f}"))
        for s in p["region_oracle"]:
            rows.append((f"{s} region oracle / class-set oracle",
                         f"{f(p['region_oracle'][s])} / {f(p['class_set_oracle'].get(s))}"))
    return rows
