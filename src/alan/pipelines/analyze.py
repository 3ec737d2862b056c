"""`analyze`: what a clinician-researcher wants from one recording.

For every frame: parcels, the LV (and LA) mask from fitted parcel-to-segment models; the LV
area curve; ED/ES frames found from it (area maxima/minima per cycle); an ejection-fraction
estimate from the masks by the single-plane area-length method (V = 8 A^2 / (3 pi L)); the view
class from a kNN bank if one is given; an overlay MP4, an area plot and a JSON summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks

from alan.artifacts import atomic_write_json
from alan.downstream.knn import WeightedKNN
from alan.downstream.parcel_to_segment import ParcelToSegment
from alan.errors import AlanError
from alan.pipelines.segment import Parcellator, labels_to_native, mask_ef, masks_to_native, to_work
from alan.records import Record
from alan.reports.figures import area_curve
from alan.reports.overlays import save_overlay_mp4


def find_ed_es(areas: np.ndarray, fps: float | None = None) -> tuple[list[int], list[int]]:
    """ED = local maxima, ES = local minima of the (lightly smoothed) LV area curve.

    Peaks must stand out by 15% of the area range and lie at least ~0.3 s apart (8 frames if the
    frame rate is unknown); a curve without a clear cycle falls back to the global max / min."""
    a = uniform_filter1d(np.asarray(areas, dtype=float), size=3, mode="nearest")
    span = float(a.max() - a.min())
    if len(a) < 3 or span <= 0:
        return [int(np.argmax(a))], [int(np.argmin(a))]
    distance = max(2, int(round(0.3 * fps)) if fps else 8)
    ed, _ = find_peaks(a, prominence=0.15 * span, distance=distance)
    es, _ = find_peaks(-a, prominence=0.15 * span, distance=distance)
    if len(ed) == 0:
        ed = np.array([int(np.argmax(a))])
    if len(es) == 0:
        es = np.array([int(np.argmin(a))])
    return [int(i) for i in ed], [int(i) for i in es]


def cycle_efs(masks: np.ndarray, ed: list[int], es: list[int]) -> list[dict[str, Any]]:
    """EF for each ED followed by the next ES (the systole of one beat)."""
    beats = []
    for e in ed:
        later = [s for s in es if s > e]
        if later:
            s = later[0]
            beats.append({"ed": e, "es": s, "ef": mask_ef(masks[e], masks[s])})
    if not beats and ed and es:
        beats.append({"ed": ed[0], "es": es[0], "ef": mask_ef(masks[ed[0]], masks[es[0]])})
    return beats


def analyze_record(record: Record, parcellator: Parcellator, segmenters: dict[str, ParcelToSegment], out_dir: str | Path,
                   knn: WeightedKNN | None = None) -> dict[str, Any]:
    """Run the analysis of one recording and write masks.npz, overlay.mp4, lv_area.png, summary.json."""
    if "LV" not in segmenters:
        raise AlanError("analyze needs an LV parcel-to-segment model (--segment MODEL.json with target LV)")
    prov = {k: v for k, v in parcellator.provenance.items() if k != "work_size"}
    for model in segmenters.values():
        model.check_provenance(prov)
    out = Path(out_dir)
    frames = np.asarray(record.frames)
    shape = frames.shape[1:]
    work = to_work(list(frames), parcellator.work_size)
    parcels = parcellator(work)
    masks = {t: np.stack(masks_to_native(m.predict(parcels), [shape] * len(frames))) for t, m in segmenters.items()}
    fps = record.meta.get("FPS") or record.meta.get("fps")
    areas = masks["LV"].sum(axis=(1, 2)).astype(float)
    ed, es = find_ed_es(areas, fps)
    beats = cycle_efs(masks["LV"], ed, es)
    efs = [b["ef"] for b in beats if np.isfinite(b["ef"])]
    summary: dict[str, Any] = {
        "record": record.id,
        "source": record.source,
        "frames": int(len(frames)),
        "height": int(shape[0]),
        "width": int(shape[1]),
        "fps": fps,
        "ed_frames": ed,
        "es_frames": es,
        "beats": beats,
        "ef_percent": float(np.median(efs)) if efs else None,
        "ef_method": "single-plane area-length from the LV masks, V = 8 A^2 / (3 pi L), median over beats",
        "lv_area_px": areas.tolist(),
        "provenance": {**prov, "segment": {t: m.interior_parcels_ for t, m in segmenters.items()}},
    }
    if "LA" in masks:
        summary["la_area_px"] = masks["LA"].sum(axis=(1, 2)).astype(float).tolist()
    if knn is not None:
        from alan.pipelines.views import cls_features

        knn.check_provenance({"backbone_hash": prov.get("backbone_hash")})
        step = max(1, len(frames) // 16)
        fake = [Record(id=f"{record.id}:{i}", load_frames=(lambda i=i: frames[i:i + 1]), n_frames=1) for i in range(0, len(frames), step)]
        proba = knn.predict_proba(cls_features(parcellator.backbone, fake)).mean(axis=0)
        summary["view"] = str(knn.classes_[int(np.argmax(proba))])
        summary["view_scores"] = {str(c): float(p) for c, p in zip(knn.classes_, proba)}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".masks.tmp.npz"
    np.savez_compressed(tmp, **{t: m for t, m in masks.items()})
    tmp.replace(out / "masks.npz")
    native_parcels = np.stack([labels_to_native(p, shape) for p in parcels])
    save_overlay_mp4(out / "overlay.mp4", frames, native_parcels, fps=float(fps or 25.0), masks=[{t: m[i] for t, m in masks.items()} for i in range(len(frames))])
    area_curve(areas, ed, es, out / "lv_area.png", title=f"LV area, {record.id}")
    atomic_write_json(out / "summary.json", summary)
    return summary
