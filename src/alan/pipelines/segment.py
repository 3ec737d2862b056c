"""Parcel-to-segment on datasets: collect annotated ED/ES frames, fit, evaluate (ALAN Table 2).

Frames of any size are brought to a square working resolution (`work_size`, default 112 px as
in the paper's EchoNet setting) by `alan.transforms.spatial.to_work` (the transform RAPTOR's
training clips go through) for parcellation and post-processing; predictions are resized back
(nearest) and scored against the ground truth at the file's own resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.progress import Progress

from alan.downstream.constant_mask import ConstantMask
from alan.downstream.parcel_to_segment import ParcelToSegment, predict_targets, region_oracle, unmet_yields
from alan.errors import AlanError
from alan.metrics import area_length_volume, dice, dice_summary, ejection_fraction
from alan.models.parcellator import Parcellator
from alan.records import Record
from alan.transforms.spatial import labels_to_native, masks_to_native, masks_to_work, to_work  # noqa: F401

#: The paper's Table 2 (DICE %, DINO ViT-S/4 trained on EchoNet, K=64), for side-by-side tables.
PAPER_TABLE2 = {
    "echonet": {"LV": {"ES": 80.11, "ED": 81.81}},
    "camus": {"LV": {"ES": 73.85, "ED": 78.13}, "LA": {"ES": 54.50, "ED": 53.80}},
}
PHASES = ("ED", "ES")


@dataclass
class AnnotatedFrames:
    """Annotated ED/ES frames of a set of records, at native resolution."""

    record_ids: list[str] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.masks)


def collect_annotated(records: list[Record], target: str, progress: bool = False, images: bool = True) -> AnnotatedFrames:
    """The ED and ES frames of `records` that carry a `target` mask (other annotated frames are
    ignored); with `images=False` their masks alone (no video is decoded)."""
    out = AnnotatedFrames()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"reading {target} frames", total=len(records))
        for rec in records:
            bar.advance(task)
            wanted = {p: getattr(rec, p.lower()) for p in PHASES}
            if not any(i is not None and i in rec.annotated for i in wanted.values()):
                continue
            masks = rec.masks
            frames = None
            for phase, idx in wanted.items():
                if idx is None or target not in masks.get(idx, {}):
                    continue
                if frames is None and images:
                    frames = rec.frames
                out.record_ids.append(rec.id)
                out.phases.append(phase)
                if images:
                    out.images.append(np.asarray(frames[idx]))
                out.masks.append(masks[idx][target].astype(bool))
                out.records.append(rec)
    return out


def _annotated(records: list[Record] | AnnotatedFrames, target: str, progress: bool) -> AnnotatedFrames:
    if isinstance(records, AnnotatedFrames):
        frames = records
    else:
        frames = collect_annotated(records, target, progress)
    if not len(frames):
        n = len({r.id for r in frames.records}) if isinstance(records, AnnotatedFrames) else len(records)
        raise AlanError(f"no annotated ED/ES frames with a {target} mask among {n} records")
    return frames


def fit_baseline(records: list[Record] | AnnotatedFrames, target: str, work_size: int = 112,
                 progress: bool = False) -> ConstantMask:
    """The constant-mask baseline: the mean `target` mask of the annotated ED/ES frames of `records`
    in the square working frame, thresholded at 0.5 (see `ConstantMask`)."""
    frames = _annotated(records, target, progress)
    return ConstantMask().fit(masks_to_work(frames.masks, work_size))


def annotated_parcels(parcellator: Parcellator, frames: AnnotatedFrames,
                      cache: dict[tuple[str, str], np.ndarray] | None = None) -> np.ndarray:
    """Work-size parcel maps (N, S, S) of annotated frames. With a `cache` ({(record id, phase):
    parcel map}, for this one `parcellator`), frames already seen (the same ED frame for the LV and
    the LA, say) reuse their maps and only the others go through the backbone."""
    if cache is None or not len(frames):
        return parcellator(to_work(frames.images, parcellator.work_size))
    keys = list(zip(frames.record_ids, frames.phases))
    todo = [i for i, key in enumerate(keys) if key not in cache]
    if todo:
        new = parcellator(to_work([frames.images[i] for i in todo], parcellator.work_size))
        cache.update((keys[i], p) for i, p in zip(todo, new))
    return np.stack([cache[key] for key in keys])


def fit_segmenter(parcellator: Parcellator, records: list[Record] | AnnotatedFrames, target: str,
                  progress: bool = False, cache: dict[tuple[str, str], np.ndarray] | None = None,
                  **hyper: Any) -> ParcelToSegment:
    """Fit parcel-to-segment for `target` on the annotated ED/ES frames of `records` (or on frames
    already collected with `collect_annotated`); `cache`: see `annotated_parcels`. The masks of
    the `cut_against` targets come from the same records."""
    frames = _annotated(records, target, progress)
    parcels = annotated_parcels(parcellator, frames, cache)
    masks = masks_to_work(frames.masks, parcellator.work_size)
    model = ParcelToSegment(target=target, n_parcels=int(parcellator.head.n_parcels), **hyper)
    images = to_work(frames.images, parcellator.work_size) if model.bright_cut > 0 else None
    against = None
    if model.cut_against:
        recs = list({id(r): r for r in frames.records}.values())
        against = {t: masks_to_work(_annotated(collect_annotated(recs, t, images=False), t, False).masks,
                                    parcellator.work_size) for t in model.cut_against}
    return model.fit(parcels, masks, provenance=parcellator.provenance, frames=images, against=against)


@dataclass
class SegmentationResult:
    """Per-frame results of one evaluation, plus the summary table."""

    target: str
    record_ids: list[str]
    phases: list[str]
    dice: np.ndarray
    images: np.ndarray
    parcels: np.ndarray
    pred: np.ndarray
    truth: np.ndarray
    ef: dict[str, Any] | None = None
    class_set_dice: np.ndarray | None = None  # plain union of the fitting set's best class set
    baseline_dice: np.ndarray | None = None  # the constant mask (mean fitting mask) on the same frames

    def summary(self) -> dict[str, dict[str, float]]:
        return {p: dice_summary(self.dice[np.asarray(self.phases) == p]) for p in PHASES}


def evaluate_segmenter(model: ParcelToSegment, parcellator: Parcellator, records: list[Record] | AnnotatedFrames,
                       progress: bool = False, baseline: ConstantMask | None = None,
                       others: dict[str, ParcelToSegment] | None = None,
                       cache: dict[tuple[str, str], np.ndarray] | None = None) -> SegmentationResult:
    """DICE of `model` on the annotated ED/ES frames of `records`, at native resolution; with a
    `baseline` (`fit_baseline` on the fitting records) its DICE on the same frames too. `others`:
    the models of the targets `model` yields to (`ParcelToSegment.yields_to`) and of those that
    yield to it (which may take its pixels, see `yield_limit`), run on the same frames;
    `cache`: see `annotated_parcels`."""
    prov = {k: v for k, v in parcellator.provenance.items() if k != "work_size"}
    model.check_provenance(prov)
    given = {m.target for m in (others or {}).values()} | {model.target}
    models = {model.target: model, **{m.target: m for m in (others or {}).values() if m.target in model.yields_to
                                      or (model.target in m.yields_to and set(m.yields_to) <= given)}}
    missing = [other for _, other in unmet_yields(models)]
    if missing:
        raise AlanError(f"the {model.target} model yields to {', '.join(missing)}: give that model too")
    for other in models.values():
        other.check_provenance(prov)
    frames = _annotated(records, model.target, progress)
    images = to_work(frames.images, parcellator.work_size)
    parcels = annotated_parcels(parcellator, frames, cache)
    pred = predict_targets(models, parcels, images)[model.target]
    shapes = [m.shape for m in frames.masks]
    native = masks_to_native(pred, shapes)
    scores = np.array([dice(p, t) for p, t in zip(native, frames.masks)])
    result = SegmentationResult(model.target, frames.record_ids, frames.phases, scores, images, parcels, pred,
                                masks_to_work(frames.masks, parcellator.work_size))
    if model.target == "LV":
        result.ef = ef_errors(frames, native)
    best = getattr(model, "best_class_set_", None)  # set by fit(), not kept in the JSON file
    if best is not None:
        alt = masks_to_native(np.isin(parcels, best), shapes)
        result.class_set_dice = np.array([dice(p, t) for p, t in zip(alt, frames.masks)])
    if baseline is not None:
        if baseline.mask_.shape != (parcellator.work_size, parcellator.work_size):
            raise AlanError(f"constant-mask baseline is {baseline.mask_.shape}, not the working size {parcellator.work_size}")
        const = masks_to_native(baseline.predict(images), shapes)
        result.baseline_dice = np.array([dice(p, t) for p, t in zip(const, frames.masks)])
    return result


def native_masks(models: dict[str, ParcelToSegment], parcels: np.ndarray, shape: tuple[int, int],
                 frames: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each model's masks of work-size parcel maps (T, S, S) (`predict_targets`: `yields_to` applied), back at the
    frames' `shape`: {target: bool (T, H, W)}. `frames`: the work-size frames, for a `bright_cut`."""
    return {t: np.stack(masks_to_native(m, [shape] * len(parcels)))
            for t, m in predict_targets(models, parcels, frames).items()}


def overlay_video(parcellator: Parcellator, models: dict[str, ParcelToSegment], record: Record, path: Any,
                  max_frames: int = 64) -> Any:
    """An H.264 MP4 of `record` (its first `max_frames` frames) with parcel boundaries and each
    model's predicted mask, for the HTML reports (browsers play it)."""
    from alan.reports.overlays import save_overlay_mp4

    frames = np.asarray(record.frames)
    frames = (frames[None] if frames.ndim == 2 else frames)[:max_frames]
    shape = frames.shape[1:]
    work = to_work(list(frames), parcellator.work_size)
    parcels = parcellator(work)
    native = np.stack([labels_to_native(p, shape) for p in parcels])
    fps = float(record.meta.get("FPS") or record.meta.get("fps") or 25.0)
    return save_overlay_mp4(path, frames, native, fps=fps, masks=native_masks(models, parcels, shape, work))


def mask_ef(ed_mask: np.ndarray, es_mask: np.ndarray) -> float:
    """Single-plane area-length EF (%) from LV masks at ED and ES: V = 8 A^2 / (3 pi L)."""
    from skimage.measure import regionprops

    vols = []
    for m in (ed_mask, es_mask):
        props = regionprops(m.astype(np.uint8))
        if not props:
            return float("nan")
        vols.append(area_length_volume(props[0].area, props[0].axis_major_length))
    return float(ejection_fraction(vols[0], vols[1]) * 100.0)


def ef_errors(frames: AnnotatedFrames, pred_native: list[np.ndarray]) -> dict[str, Any] | None:
    """EF (area-length) from predicted and from ground-truth masks vs the dataset's EF (meta["EF"])."""
    by_rec: dict[str, dict[str, int]] = {}
    for i, (rid, ph) in enumerate(zip(frames.record_ids, frames.phases)):
        by_rec.setdefault(rid, {})[ph] = i
    rows = []
    for rid, idx in by_rec.items():
        if set(idx) != set(PHASES):
            continue
        rec = frames.records[idx["ED"]]
        ref = rec.meta.get("EF")
        ef_pred = mask_ef(pred_native[idx["ED"]], pred_native[idx["ES"]])
        ef_gt = mask_ef(frames.masks[idx["ED"]], frames.masks[idx["ES"]])
        rows.append((rid, ref, ef_pred, ef_gt))
    if not rows or all(r[1] is None for r in rows):
        return None
    ref = np.array([np.nan if r[1] is None else float(r[1]) for r in rows])
    pred = np.array([r[2] for r in rows])
    gt = np.array([r[3] for r in rows])
    plausible = np.isfinite(pred) & (pred >= 0) & (pred <= 100)
    return {
        "method": "single-plane area-length, V = 8 A^2 / (3 pi L), L = major axis of the mask",
        "n": len(rows),
        "mae_pred_vs_reference": _nan_stat(np.mean, np.abs(pred - ref)),
        "median_ae_pred_vs_reference": _nan_stat(np.median, np.abs(pred - ref)),
        "mae_truth_masks_vs_reference": _nan_stat(np.mean, np.abs(gt - ref)),
        "mae_pred_vs_truth_masks": _nan_stat(np.mean, np.abs(pred - gt)),
        # an empty mask gives no EF; an ES mask larger than the ED mask gives EF < 0
        "n_pred_implausible": int((~plausible).sum()),
        "mae_pred_vs_reference_plausible": _nan_stat(np.mean, np.abs(pred - ref)[plausible]),
    }


def _nan_stat(fn: Any, x: np.ndarray) -> float:
    """`fn` over the finite entries of `x`; NaN (not a warning) when there are none."""
    x = x[np.isfinite(x)]
    return float(fn(x)) if x.size else float("nan")


def oracle_dice(parcels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-frame DICE of the best union of each frame's own parcel regions (`region_oracle`):
    what a perfect parcel selection could reach, shown beside the rule's DICE."""
    return np.atleast_1d(dice(region_oracle(parcels, truth), truth))


def _phase_means(values: np.ndarray, phases: np.ndarray) -> dict[str, float]:
    """Mean of per-frame `values` for each phase that has frames."""
    return {p: float(values[phases == p].mean()) for p in PHASES if (phases == p).any()}


def segmentation_report(results: dict[str, SegmentationResult], fmt: str, figures: Any = None) -> dict[str, Any]:
    """JSON-ready summary of evaluations per target (+ optional figures: histogram, best/worst)."""
    from pathlib import Path

    from alan.reports.figures import best_worst, dice_histogram, parcel_atlas

    report: dict[str, Any] = {"format": fmt, "dice": {}, "oracle": {}, "n_frames": 0, "paper": PAPER_TABLE2.get(fmt)}
    for target, res in results.items():
        report["dice"][target] = res.summary()
        oracle = oracle_dice(res.parcels, res.truth)
        phases = np.asarray(res.phases)
        report["oracle"][target] = _phase_means(oracle, phases)
        if res.class_set_dice is not None:
            report.setdefault("class_set_oracle", {})[target] = _phase_means(res.class_set_dice, phases)
        if res.baseline_dice is not None:
            report.setdefault("baseline", {})[target] = _phase_means(res.baseline_dice, phases)
        report["n_frames"] += len(res.dice)
        if res.ef is not None:
            report["ef"] = res.ef
        if figures is not None:
            fig_dir = Path(figures)
            groups = {f"{target} {p}": res.dice[phases == p] for p in PHASES}
            report.setdefault("figures", []).append(str(dice_histogram(groups, fig_dir / f"dice_hist_{fmt}_{target}.png",
                                                                       title=f"{fmt} {target} DICE")))
            labels = [f"{r} {p}" for r, p in zip(res.record_ids, res.phases)]
            report["figures"].append(str(best_worst(res.images, res.parcels, res.truth, res.pred, res.dice,
                                                    fig_dir / f"best_worst_{fmt}_{target}.png", labels=labels)))
            if target == next(iter(results)):  # one atlas per dataset: the parcels are the same for every target
                n = min(16, len(res.images))
                report["figures"].append(str(parcel_atlas(
                    res.images[:n], res.parcels[:n], fig_dir / f"parcels_{fmt}.png",
                    masks=res.truth[:n], labels=labels[:n], cols=8,
                    title=f"{fmt} test frames: parcels coloured by id (same colour = same parcel class); {target} contour white")))
    return report
