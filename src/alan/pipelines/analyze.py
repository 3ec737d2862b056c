"""`analyze`: what a clinician-researcher wants from a recording, and from a study of many.

For every frame: parcels, the LV (and LA) mask from fitted parcel-to-segment models; the LV
area curve; ED/ES frames found from it (area maxima/minima per cycle); an ejection-fraction
estimate from the masks by the single-plane area-length method (V = 8 A^2 / (3 pi L)) per beat
and its median; the view class from a kNN bank if one is given.

Per record (one folder each, written atomically): ``labels.nii.gz`` (NIfTI label map, 1 = LV,
2 = LA, with the record's spacing), ``overlay.mp4`` (H.264), ``lv_area.png``, ``summary.json``.
Per study: ``results.csv``, ``results.json`` and ``report.html`` (plays the overlays).
Records are streamed: the next one is decoded while the backbone runs, frames of several short
recordings are stacked into one backbone batch (`Parcellator.cls_and_logits_across`), and a writer
thread turns each finished recording's logits into masks, numbers and files while the backbone
goes on. Memory holds a batch of frames plus the few recordings in flight, whatever the size of
the study.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks
from threadpoolctl import threadpool_limits

from alan.artifacts import MARKER, atomic_dir, atomic_write_json, atomic_write_text, check_output_dir, output_kind
from alan.downstream.knn import WeightedKNN
from alan.downstream.parcel_to_segment import ParcelToSegment, unmet_yields
from alan.errors import AlanError, DataError
from alan.pipelines.labelmaps import LABEL_IDS, masks_to_labels, write_label_map
from alan.models.parcellator import Parcellator
from alan.pipelines.segment import mask_ef, native_masks
from alan.pipelines.views import bank_features, bank_input_size
from alan.transforms.spatial import labels_to_native, to_work
from alan.records import Record

STUDY_KIND = "analyze"
RECORD_KIND = "analyze-record"
#: x264 settings of the per-recording overlay: "ultrafast" at CRF 23 takes half the encoder CPU
#: of "veryfast" at CRF 20 for the same PSNR on phantom echo overlays, in files about 20% larger.
#: One x264 thread: the overlay is encoded beside the backbone, and one thread takes 20 % less CPU
#: than x264's own choice on these frames, in the same wall time.
OVERLAY_PRESET, OVERLAY_CRF = "ultrafast", 23
#: Relative LV-area swing (max - min) / max below which a recording has no usable cycle.
MIN_AREA_SWING = 0.05
CSV_COLUMNS = ("record", "status", "source", "view", "frames", "fps", "ed_frames", "es_frames", "beats",
               "ef_beats_percent", "ef_percent", "lv_area_ed", "lv_area_es", "la_area_max", "area_unit",
               "warnings", "folder")


class Timings:
    """Seconds per stage of an analysis, summed over records: wall clock and CPU of the thread that
    ran it (child processes, ffmpeg, are added by `add`). A stage timed inside another is not
    counted in the outer one. Thread-safe; a profile, in no output file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = threading.local()
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def add(self, stage: str, wall: float, cpu: float) -> None:
        with self._lock:
            self.wall[stage] = self.wall.get(stage, 0.0) + wall
            self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        stack = self._open.__dict__.setdefault("stack", [])
        inner = [0.0, 0.0]  # time of stages timed inside this one
        stack.append(inner)
        t, c = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - t, time.thread_time() - c
            stack.pop()
            if stack:
                stack[-1][0] += wall
                stack[-1][1] += cpu
            self.add(stage, wall - inner[0], cpu - inner[1])

    def iterate(self, stage: str, items: Iterable[Any]) -> Iterator[Any]:
        """`items`, the time spent making each one counted under `stage`."""
        items = iter(items)
        while True:
            with self(stage):
                item = next(items, _END)
            if item is _END:
                return
            yield item

    def as_dict(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {k: {"wall_s": self.wall[k], "cpu_s": self.cpu[k]} for k in self.wall}


_END = object()


def _find_ed_es(areas: np.ndarray, fps: float | None) -> tuple[list[int], list[int], bool]:
    a = uniform_filter1d(np.asarray(areas, dtype=float), size=3, mode="nearest")
    span = float(a.max() - a.min()) if len(a) else 0.0
    if len(a) < 3 or span <= 0:
        return [int(np.argmax(a))], [int(np.argmin(a))], False
    distance = max(2, int(round(0.3 * fps)) if fps else 8)
    ed, _ = find_peaks(a, prominence=0.15 * span, distance=distance)
    es, _ = find_peaks(-a, prominence=0.15 * span, distance=distance)
    clear = len(ed) > 0 and len(es) > 0
    if len(ed) == 0:
        ed = np.array([int(np.argmax(a))])
    if len(es) == 0:
        es = np.array([int(np.argmin(a))])
    return [int(i) for i in ed], [int(i) for i in es], clear


def find_ed_es(areas: np.ndarray, fps: float | None = None) -> tuple[list[int], list[int]]:
    """ED = local maxima, ES = local minima of the (lightly smoothed) LV area curve.

    Peaks must stand out by 15% of the area range and lie at least ~0.3 s apart (8 frames if the
    frame rate is unknown); a curve without a clear cycle falls back to the global max / min."""
    ed, es, _ = _find_ed_es(areas, fps)
    return ed, es


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


def cycle_warnings(areas: np.ndarray, clear: bool) -> tuple[list[str], bool]:
    """(warnings, usable): why an LV area curve gives no trustworthy ED/ES / EF."""
    areas = np.asarray(areas, dtype=float)
    if len(areas) == 0 or areas.max() <= 0:
        return ["no LV found in any frame: no ED/ES, no EF"], False
    swing = float((areas.max() - areas.min()) / areas.max())
    if swing < MIN_AREA_SWING:
        return [f"no clear cardiac cycle: the LV area varies by {swing:.1%} only; no EF"], False
    if not clear:
        return ["no clear cardiac cycle (no area peak stands out): ED/ES are the largest/smallest LV frames"], True
    return [], True


def _checked(record: Record, frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or not len(frames):
        raise DataError(record.source, f"expected gray frames (T, H, W), got shape {frames.shape}")
    return frames


def analyze_frames(record: Record, frames: np.ndarray, parcellator: Parcellator, segmenters: dict[str, ParcelToSegment],
                   knn: WeightedKNN | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """(summary, {target: bool masks (T, H, W)}, parcels (T, H, W) native) of one decoded recording."""
    frames = _checked(record, frames)
    work = to_work(list(frames), parcellator.work_size)
    if knn is not None:  # the view features come from the parcels' backbone pass (where the sizes agree)
        cls, parcels = parcellator.cls_and_parcels(work, bank_features(knn), view_size=bank_input_size(knn))
    else:
        cls, parcels = None, parcellator(work)
    return summarise(record, frames, work, parcels, parcellator, segmenters, knn, cls)


def summarise(record: Record, frames: np.ndarray, work: np.ndarray, parcels: np.ndarray, parcellator: Parcellator,
              segmenters: dict[str, ParcelToSegment], knn: WeightedKNN | None = None, cls: np.ndarray | None = None,
              timings: Timings | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """`analyze_frames` from the work-size frames (T, S, S) and their parcel maps (and CLS tokens
    (T, D) for `knn`) of decoded frames (T, H, W)."""
    timings = timings or Timings()
    shape = frames.shape[1:]
    with timings("masks"):
        masks = native_masks(segmenters, parcels, shape, work)
    with timings("summary"):
        summary = _summary(record, frames, masks, parcellator, segmenters, knn, cls)
    with timings("masks"):
        native = np.stack([labels_to_native(p, shape) for p in parcels])
    return summary, masks, native


def _summary(record: Record, frames: np.ndarray, masks: dict[str, np.ndarray], parcellator: Parcellator,
             segmenters: dict[str, ParcelToSegment], knn: WeightedKNN | None, cls: np.ndarray | None) -> dict[str, Any]:
    shape = frames.shape[1:]
    fps = record.meta.get("FPS") or record.meta.get("fps")
    fps = float(fps) if fps else None
    areas = masks["LV"].sum(axis=(1, 2)).astype(float)
    ed, es, clear = _find_ed_es(areas, fps)
    warnings, usable = cycle_warnings(areas, clear)
    beats = cycle_efs(masks["LV"], ed, es) if usable else []
    efs = [b["ef"] for b in beats if np.isfinite(b["ef"])]
    ef = float(np.median(efs)) if efs else None
    if ef is not None and not 0 <= ef <= 100:
        warnings.append(f"implausible EF {ef:.1f}% (outside 0-100 %): check the masks")
    if not usable:
        ed, es = [], []
    pixel_mm2 = float(record.spacing[0] * record.spacing[1]) if record.spacing else None
    prov = {k: v for k, v in parcellator.provenance.items() if k != "work_size"}
    summary: dict[str, Any] = {
        "record": record.id,
        "source": record.source,
        "frames": int(len(frames)),
        "height": int(shape[0]),
        "width": int(shape[1]),
        "fps": fps,
        "spacing_mm": list(record.spacing) if record.spacing else None,
        "ed_frames": ed,
        "es_frames": es,
        "beats": beats,
        "ef_percent": ef,
        "ef_method": "single-plane area-length from the LV masks, V = 8 A^2 / (3 pi L), median over beats",
        "area_unit": "mm2" if pixel_mm2 else "px",
        "lv_area_px": areas.tolist(),
        "warnings": warnings,
        "labels": {t: LABEL_IDS[t] for t in masks},
        "provenance": {**prov, "work_size": parcellator.work_size,
                       "segment": {t: m.interior_parcels_ for t, m in segmenters.items()}},
    }
    if pixel_mm2:
        summary["lv_area_mm2"] = (areas * pixel_mm2).tolist()
    if "LA" in masks:
        summary["la_area_px"] = masks["LA"].sum(axis=(1, 2)).astype(float).tolist()
        if pixel_mm2:
            summary["la_area_mm2"] = (np.asarray(summary["la_area_px"]) * pixel_mm2).tolist()
    if knn is not None:
        knn.check_provenance({"backbone_hash": prov.get("backbone_hash")})
        step = max(1, len(frames) // 16)
        proba = knn.predict_proba(cls[::step]).mean(axis=0)
        summary["view"] = str(knn.classes_[int(np.argmax(proba))])
        summary["view_scores"] = {str(c): float(p) for c, p in zip(knn.classes_, proba)}
    return summary


def write_record(folder: str | Path, record: Record, frames: np.ndarray, summary: dict[str, Any],
                 masks: dict[str, np.ndarray], parcels: np.ndarray, timings: Timings | None = None) -> Path:
    """One record's folder, atomically: labels.nii.gz, overlay.mp4, lv_area.png, summary.json."""
    from alan.reports.overlays import overlay_frames, overlay_scale, write_h264

    timings = timings or Timings()
    frames = np.asarray(frames)
    frames = frames[None] if frames.ndim == 2 else frames
    with atomic_dir(folder, RECORD_KIND) as tmp:
        with timings("nifti"):
            write_label_map(tmp / "labels.nii.gz", masks_to_labels(masks), record.spacing,
                            f"alan {'+'.join(masks)} masks")
        drawn = timings.iterate("overlay draw", overlay_frames(frames, parcels, masks, overlay_scale(frames.shape[1:])))
        child = _children_cpu()
        with timings("overlay encode (H.264)"):
            write_h264(tmp / "overlay.mp4", drawn, fps=float(summary["fps"] or 25.0), preset=OVERLAY_PRESET,
                       crf=OVERLAY_CRF, threads=1)
        timings.add("overlay encode (H.264)", 0.0, _children_cpu() - child)  # ffmpeg's own CPU
        with timings("plot"):
            areas = np.asarray(summary.get("lv_area_mm2") or summary["lv_area_px"])
            area_plot(areas, summary["ed_frames"], summary["es_frames"], tmp / "lv_area.png",
                      title=f"LV area [{summary['area_unit']}], {record.id}", unit=summary["area_unit"])
        with timings("summary json"):
            atomic_write_json(tmp / "summary.json", summary)
    return Path(folder)


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


_plots = threading.local()


def area_plot(areas: np.ndarray, ed: Sequence[int], es: Sequence[int], path: str | Path, title: str = "LV area",
              unit: str = "px") -> Path:
    """The LV area curve with its ED / ES frames as a PNG, written atomically; the figure of
    `alan.reports.figures.area_curve`, drawn on one figure per thread that is reused (a new
    matplotlib figure and a tight bounding box cost more than the drawing)."""
    from matplotlib.figure import Figure

    from alan.artifacts import atomic_file

    areas = np.asarray(areas, dtype=float)
    plot = getattr(_plots, "plot", None)
    if plot is None:
        fig = Figure(figsize=(6, 2.6))
        ax = fig.subplots()
        fig.subplots_adjust(left=0.12, right=0.98, bottom=0.19, top=0.88)
        (line,) = ax.plot([], [], color="#4c72b0")
        marks = (ax.scatter([], [], color="#c44e52", label="ED", zorder=3),
                 ax.scatter([], [], color="#55a868", label="ES", zorder=3))
        ax.set_xlabel("frame")
        ax.legend(fontsize=8)
        plot = _plots.plot = (fig, ax, line, marks)
    fig, ax, line, marks = plot
    line.set_data(np.arange(len(areas)), areas)
    for mark, idx in zip(marks, (ed, es)):
        idx = np.asarray(list(idx), dtype=int)
        mark.set_offsets(np.c_[idx, areas[idx]] if len(idx) else np.empty((0, 2)))
    ax.relim()
    ax.autoscale_view()
    ax.set_ylabel(f"area [{unit}]")
    ax.set_title(title, fontsize=9)
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def analyze_record(record: Record, parcellator: Parcellator, segmenters: dict[str, ParcelToSegment], out_dir: str | Path,
                   knn: WeightedKNN | None = None) -> dict[str, Any]:
    """Analyse one recording into `out_dir` (see `write_record`); returns its summary."""
    check_segmenters(parcellator, segmenters)
    frames = np.asarray(record.frames)
    summary, masks, parcels = analyze_frames(record, frames, parcellator, segmenters, knn)
    write_record(out_dir, record, frames, summary, masks, parcels)
    return summary


def check_segmenters(parcellator: Parcellator, segmenters: dict[str, ParcelToSegment]) -> None:
    """Refuse a model set without LV, or models fitted on another backbone / head."""
    if "LV" not in segmenters:
        raise AlanError("analyze needs an LV parcel-to-segment model (--segment MODEL.json with target LV)")
    prov = {k: v for k, v in parcellator.provenance.items() if k != "work_size"}
    for model in segmenters.values():
        model.check_provenance(prov)
    if unmet := unmet_yields(segmenters):
        target, other = unmet[0]
        raise AlanError(f"the {target} model yields to {other}: give that model too "
                        f"(--segment MODEL.json with target {other})")


# ----------------------------------------------------------------------------------- studies
@dataclass
class Failed:
    """An input that could not be analysed (a corrupt video, say) and why."""

    id: str
    source: str | None
    error: str


@dataclass
class StudyResult:
    """What `analyze_study` did: one row per input, in input order."""

    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    reused: int = 0
    timings: Timings = field(default_factory=Timings)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def warned(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok" and r["warnings"]]


def study_inputs(path: str | Path, format: str = "auto", split: str = "all") -> list[Record | Failed]:
    """The records to analyse at `path`: a video / DICOM file, a folder of them, or any dataset.

    In a folder of videos every file is opened on its own, so one unreadable file becomes a
    `Failed` entry instead of stopping the listing of the others."""
    from alan.data import open_dataset

    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    if path.is_dir() and format in ("auto", "videos"):
        from alan.data.detect import detect_format

        if format == "videos" or detect_format(path) == "videos":
            return _video_folder(path)
    dataset = open_dataset(path, format)
    if split.lower() == "all":
        return list(dataset.records)
    records = dataset.split(*split.split(","))
    if not records:
        raise DataError(path, f"no records in split {split!r} (splits: {dataset.splits()}; use --split all)")
    return records


def _video_folder(root: Path) -> list[Record | Failed]:
    from alan.data.videos import find_media, read

    files = find_media(root)
    if not files:
        raise DataError(root, "empty folder: no AVI, MP4 or DICOM files found")
    out: list[Record | Failed] = []
    for f in files:
        rid = f.relative_to(root).with_suffix("").as_posix()
        try:
            records = read(f).records
        except DataError as e:
            out.append(Failed(rid, str(f), str(e)))
            continue
        out.extend(replace(r, id=rid, patient=r.patient if r.patient != r.id else rid) for r in records)
    return out


def _folder_names(items: Sequence[Record | Failed]) -> list[str]:
    from alan.pipelines.parcels import safe_name

    names, seen = [], set()
    for item in items:
        name = safe_name(item.id)
        base, n = name, 1
        while name in seen:
            n += 1
            name = f"{base}_{n}"
        seen.add(name)
        names.append(name)
    return names


def _finished(folder: Path, provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a complete record folder made with the same models, else None."""
    if output_kind(folder) != RECORD_KIND:
        return None
    try:
        marker = json.loads((folder / MARKER).read_text())
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not marker.get("complete") or summary.get("provenance") != provenance:
        return None
    return summary


def _decode(item: Record, work_size: int, timings: Timings) -> tuple[np.ndarray, np.ndarray] | Failed:
    """(native frames (T, H, W), work frames (T, S, S)) of a record, or why it failed."""
    try:
        with timings("decode"):
            frames = _checked(item, item.frames)
            return frames, to_work(list(frames), work_size)
    except DataError as e:
        return Failed(item.id, item.source, str(e))


def _prefetched(items: Sequence[Record | Failed], todo: Sequence[int], work_size: int, timings: Timings
                ) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray] | Failed]]:
    """(index, decoded frames or Failed) of the records `todo`, the next one decoded in the background."""
    records = [i for i in todo if not isinstance(items[i], Failed)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="alan-analyze-decode") as pool:
        jobs = iter(records)
        nxt = next(jobs, None)
        pending = pool.submit(_decode, items[nxt], work_size, timings) if nxt is not None else None
        for i in todo:
            if isinstance(items[i], Failed):
                yield i, items[i]
                continue
            with timings("waiting for decode"):
                got = pending.result()
            nxt = next(jobs, None)
            pending = pool.submit(_decode, items[nxt], work_size, timings) if nxt is not None else None
            yield i, got


#: Recordings handed to the writer thread and not yet written: bounds memory, keeps it busy.
WRITER_QUEUE = 2


def analyze_study(items: Sequence[Record | Failed], parcellator: Parcellator, segmenters: dict[str, ParcelToSegment],
                  out: str | Path, *, knn: WeightedKNN | None = None, resume: bool = False,
                  progress: bool = True, console: Any = None) -> StudyResult:
    """Analyse every record into ``OUT/records/NAME/``; write results.csv, results.json, report.html.

    A record that fails to decode is reported in the table (status "failed") and the others go on.
    With `resume`, a record whose folder is complete and was made with the same models is reused.
    `OUT` must be absent, empty, or an earlier analyze output.

    Frames of consecutive recordings share backbone batches of ``parcellator.batch_size`` frames
    (`Parcellator.cls_and_logits_across`); per recording the results are those of `analyze_record`.
    The seconds spent per stage are in ``StudyResult.timings``."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    check_segmenters(parcellator, segmenters)
    out = Path(out)
    check_output_dir(out, STUDY_KIND)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).exists():
        atomic_write_json(out / MARKER, {"kind": STUDY_KIND, "complete": False})
    provenance = {k: v for k, v in parcellator.provenance.items() if k != "work_size"}
    provenance = {**provenance, "work_size": parcellator.work_size,
                  "segment": {t: m.interior_parcels_ for t, m in segmenters.items()}}
    names = _folder_names(items)
    done = {i: s for i, item in enumerate(items) if resume and isinstance(item, Record)
            and (s := _finished(out / "records" / names[i], provenance)) is not None}
    timings = Timings()
    result = StudyResult(out=out, reused=len(done), timings=timings)
    rows: dict[int, dict[str, Any]] = {i: _row(s, f"records/{names[i]}") for i, s in done.items()}
    total = sum(int(r.n_frames or 1) for r in items if isinstance(r, Record))
    decoded: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # native and work frames of the records in the batches
    # Masks, numbers and files of a finished record are made by one writer thread while the
    # backbone runs the next batches; at most WRITER_QUEUE records wait for it.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alan-analyze-writer")
    queue: deque[tuple[int, Future]] = deque()

    def finish(i: int, decoded_frames: tuple[np.ndarray, np.ndarray], cls: Any, logits: Any) -> dict[str, Any]:
        frames, work = decoded_frames
        with timings("parcels"):
            parcels = parcellator.parcels_of_logits(logits, (parcellator.work_size, parcellator.work_size))
        summary, masks, native = summarise(items[i], frames, work, parcels, parcellator, segmenters, knn,
                                           cls.float().numpy() if knn is not None else None, timings)
        write_record(out / "records" / names[i], items[i], frames, summary, masks, native, timings)
        return summary

    def collect(bar: Progress, task: Any) -> None:
        i, job = queue.popleft()
        try:
            summary = job.result()
        except DataError as e:
            rows[i] = _failed_row(Failed(items[i].id, items[i].source, str(e)))
            return
        rows[i] = _row(summary, f"records/{names[i]}")
        bar.update(task, description=items[i].id)
        bar.advance(task, int(items[i].n_frames or summary["frames"]))

    def to_batch() -> Iterator[tuple[int, np.ndarray]]:
        for i, got in _prefetched(items, [i for i in range(len(items)) if i not in done], parcellator.work_size,
                                  timings):
            if isinstance(got, Failed):
                rows[i] = _failed_row(got)
                continue
            decoded[i] = got
            yield i, got[1]

    # NumPy / SciPy / OpenCV BLAS threads on the small matrices of masks and snakes only spin and
    # contend with torch's threads (measured: 1.2 ms/frame with one thread, 3-18 with two);
    # torch's own threads are not BLAS ones and stay as they are.
    with Progress(TextColumn("[bold]analyze[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("frames"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  disable=not progress, console=console, transient=False) as bar, \
            threadpool_limits(1, user_api="blas"), _finishing(writer, queue):
        task = bar.add_task("", total=total or None)
        bar.advance(task, sum(int(items[i].n_frames or done[i]["frames"]) for i in done))
        features, view_size = (bank_features(knn), bank_input_size(knn)) if knn is not None else (None, None)
        batches = parcellator.cls_and_logits_across(to_batch(), features=features, view_size=view_size)
        for i, cls, logits in timings.iterate("backbone + head", batches):
            while len(queue) >= WRITER_QUEUE:
                with timings("waiting for the writer"):
                    collect(bar, task)
            queue.append((i, writer.submit(finish, i, decoded.pop(i), cls, logits)))
        while queue:
            with timings("waiting for the writer"):
                collect(bar, task)
    result.rows = [rows[i] for i in range(len(items))]
    write_study(result)
    return result


@contextmanager
def _finishing(writer: ThreadPoolExecutor, queue: deque[tuple[int, Future]]) -> Iterator[None]:
    """On any exit (an error or a kill included), let the records handed to the writer finish,
    then stop it: a record folder is never left half-written."""
    try:
        yield
    finally:
        for _, job in queue:
            try:
                job.result()
            except BaseException:
                pass
        writer.shutdown(wait=True)


def _failed_row(f: Failed) -> dict[str, Any]:
    return {"record": f.id, "status": "failed", "source": f.source, "warnings": [f.error], "folder": None}


def _row(s: dict[str, Any], folder: str) -> dict[str, Any]:
    areas = np.asarray(s.get("lv_area_mm2") or s["lv_area_px"])
    la = s.get("la_area_mm2") or s.get("la_area_px")
    ed, es = s["ed_frames"], s["es_frames"]
    return {
        "record": s["record"], "status": "ok", "source": s.get("source"), "view": s.get("view"),
        "frames": s["frames"], "fps": s.get("fps"), "ed_frames": ed, "es_frames": es, "beats": len(s["beats"]),
        "ef_beats_percent": [b["ef"] for b in s["beats"]], "ef_percent": s["ef_percent"],
        "lv_area_ed": float(np.median(areas[ed])) if ed else None,
        "lv_area_es": float(np.median(areas[es])) if es else None,
        "la_area_max": float(np.max(la)) if la is not None and len(la) else None,
        "area_unit": s["area_unit"], "warnings": list(s["warnings"]), "folder": folder,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if np.isfinite(value) else ""
    if isinstance(value, list):
        return " ".join(_cell(v) for v in value) if not all(isinstance(v, str) for v in value) else "; ".join(value)
    return str(value)


def results_csv(rows: Iterable[dict[str, Any]]) -> str:
    """The study table as CSV text (lists space-separated, warnings '; '-separated)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def write_study(result: StudyResult) -> None:
    """results.csv, results.json and report.html of a study (each written atomically)."""
    out = result.out
    atomic_write_text(out / "results.csv", results_csv(result.rows))
    atomic_write_json(out / "results.json", {"records": result.rows, "n_records": len(result.rows),
                                             "n_failed": len(result.failed), "n_warned": len(result.warned),
                                             "labels": LABEL_IDS, "columns": list(CSV_COLUMNS)})
    study_report(result).write(out / "report.html")
    atomic_write_json(out / MARKER, {"kind": STUDY_KIND, "complete": True})


def study_report(result: StudyResult):
    """The HTML report: the study table, then each record's overlay video and area curve, both linked
    from the record folders (not embedded: the report of a 10,000-recording study stays small)."""
    from alan.reports.html import Report

    rep = Report("alan analyze", link_figures=True, intro=f"{len(result.rows)} recordings, {len(result.failed)} failed, "
                                       f"{len(result.warned)} with warnings. EF: single-plane area-length from the "
                                       "predicted LV masks, median over beats.")
    table = rep.section("Results")
    cols = ("record", "status", "view", "frames", "ed_frames", "es_frames", "ef_percent", "warnings")
    table.tables.append(("one row per recording", list(cols), [[_cell(r.get(c)) for c in cols] for r in result.rows]))
    for r in result.rows:
        if r["status"] != "ok":
            continue
        folder = result.out / r["folder"]
        sec = rep.section(r["record"])
        ef = "n/a" if r["ef_percent"] is None else f"{r['ef_percent']:.1f} %"
        sec.paragraphs.append(f"ED {r['ed_frames']}, ES {r['es_frames']}, EF {ef}" +
                              (f", view {r['view']}" if r.get("view") else ""))
        sec.paragraphs += [f"warning: {w}" for w in r["warnings"]]
        sec.figures.append((folder / "overlay.mp4", "parcel boundaries (blue), predicted masks (green)"))
        sec.figures.append((folder / "lv_area.png", "LV area per frame with ED / ES"))
    return rep
