"""Expert parcel picking: define a segment by choosing parcel classes, with no labels.

ALAN (Majchrowska et al., *Unlocking the Heart Using Adaptive Locked Agnostic Networks*),
section 3.2: a parcel-to-segment model is K booleans, one per parcel class, so a domain expert
can set them by hand. `PickSession` is the logic behind `alan pick`, as plain Python:

- parcels are computed once per record (at the model's work resolution) and cached;
- `toggle` / `toggle_at` switch a parcel class in or out of the target;
- `mask` and `area_curve` are the real `ParcelToSegment.predict` (every post-processing step),
  not a preview; `dice` scores the selection on the annotated ED/ES frames of the records opened;
- `fit` starts from the fitted rule (`fit_segmenter`, what `alan segment fit` runs);
- `save` writes exactly what `alan segment fit` writes plus ``source``/``picked_at``/``picked_by``;
  `load` refuses a model of another backbone, head, K, target or work size.

`PathPolicy` is the picker's file rule: only files under the data root and the model paths
given on the command line may be opened.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from alan.artifacts import atomic_write_json
from alan.downstream.parcel_to_segment import ParcelToSegment, check_model_output
from alan.errors import AlanError, ArtifactError
from alan.metrics import dice
from alan.models.parcellator import Parcellator
from alan.pipelines.segment import PHASES, collect_annotated, fit_segmenter
from alan.transforms.spatial import masks_to_native, to_work
from alan.records import Record

#: Value of the ``source`` field of a model saved by the picker.
SOURCE = "picked"
MAX_MODEL_BYTES = 16 << 20  # a model JSON is a few kB; a request never makes the picker read a video


class PathRefused(AlanError):
    """A request for a file the picker may not open."""


def parcellate(parcellator: Parcellator, frames: np.ndarray) -> np.ndarray:
    """Parcel maps (T, s, s) of work-size frames: the picker's one call into the inference path."""
    return parcellator(frames)


def open_parcellator(backbone: str | Path | None, head: str | Path | None, work_size: int = 112) -> Parcellator:
    """Load a locked backbone and its RAPTOR head (refused if the head was trained on another
    backbone); with neither, the pair shipped with alan."""
    return Parcellator.load(backbone, head, work_size=work_size)


def blank_model(n_parcels: int, target: str, provenance: dict[str, Any]) -> ParcelToSegment:
    """A model with no interior parcel and no fitting statistics (what an expert starts from)."""
    return ParcelToSegment.from_interior(np.zeros(int(n_parcels), dtype=bool), provenance, target=target)


def picked_document(model: ParcelToSegment, by: str | None = None, when: datetime | None = None) -> dict[str, Any]:
    """`model.to_dict()` (the `segment fit` schema) plus ``source``, ``picked_at`` and ``picked_by``."""
    doc = model.to_dict()
    doc["source"] = SOURCE
    doc["picked_at"] = (when or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    if by:
        doc["picked_by"] = str(by)
    return doc


@dataclass
class PathPolicy:
    """Files the picker may open: anything under `root` (a folder, or a single file) and `files`."""

    root: Path
    files: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.files = tuple(Path(f).resolve() for f in self.files)

    def resolve(self, path: str | Path) -> Path:
        """The absolute path of an allowed file; `PathRefused` for anything else (``..`` included)."""
        text = str(path)
        if not text or "\x00" in text:
            raise PathRefused(f"{text!r}: not a file path")
        p = Path(text)
        if ".." in p.parts:
            raise PathRefused(f"{text}: '..' is not allowed in a path")
        full = p.resolve()
        if full in self.files or full == self.root or (self.root.is_dir() and full.is_relative_to(self.root)):
            return full
        raise PathRefused(f"{text}: outside the data root and the model paths given on the command line")


@dataclass(eq=False)
class OpenRecord:
    """A record as the picker holds it: work-size frames, their parcels, native masks of the target."""

    record: Record
    frames: np.ndarray
    parcels: np.ndarray
    shape: tuple[int, int]
    truth: dict[int, tuple[str, np.ndarray]] = field(default_factory=dict)  # frame -> (phase, native mask)


class PickSession:
    """A parcel-to-segment model being picked by hand on `records` (thread-safe).

    `model` (a fitted or loaded `ParcelToSegment`) is the starting point; without one the
    selection starts empty. `cache` records keep their parcels in memory (least recently used
    dropped first).
    """

    def __init__(self, records: Sequence[Record], parcellator: Parcellator, target: str = "LV",
                 model: ParcelToSegment | None = None, cache: int = 16):
        if not records:
            raise AlanError("no records to pick on")
        self.records = list(records)
        self.parcellator = parcellator
        self.target = target
        self.n_parcels = int(parcellator.head.n_parcels)
        self.cache = cache
        self.version = 0  # bumped on every change of the selection
        self._open: OrderedDict[int, OpenRecord] = OrderedDict()
        self._scored: dict[int, list[tuple[int, str, np.ndarray, np.ndarray, np.ndarray]]] = {}  # frame, phase, parcels, work frame, truth
        self._masks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.lock = threading.RLock()
        self.model = blank_model(self.n_parcels, target, parcellator.provenance)
        if model is not None:
            self.set_model(model)

    # ------------------------------------------------------------------ model
    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.parcellator.provenance)

    @property
    def interior(self) -> list[int]:
        return self.model.interior_parcels_

    def set_model(self, model: ParcelToSegment) -> None:
        """Edit `model` from now on; refused if it belongs to another backbone, head, K, target or work size."""
        where = f"{model._path}: " if getattr(model, "_path", None) else ""
        prov = self.provenance
        model.check_provenance({k: v for k, v in prov.items() if k != "work_size"})
        if model.n_parcels_ != self.n_parcels:
            raise ArtifactError(f"{where}model has K={model.n_parcels_} parcels, the head has K={self.n_parcels}")
        if model.target != self.target:
            raise ArtifactError(f"{where}model segments {model.target}, this picker edits {self.target} "
                                f"(start it with --target {model.target})")
        size = model.provenance_.get("work_size")
        if size is not None and int(size) != prov["work_size"]:
            raise ArtifactError(f"{where}model was made at work size {size}, this picker runs at {prov['work_size']}")
        with self.lock:
            model.provenance_ = {**prov, **model.provenance_}
            self.model = model
            self._changed()

    def clear(self) -> None:
        """Start again from no interior parcel."""
        with self.lock:
            self.model = blank_model(self.n_parcels, self.target, self.provenance)
            self._changed()

    def toggle(self, parcel: int) -> bool:
        """Switch parcel class `parcel` in or out of the target; returns whether it is in now."""
        if not 0 <= int(parcel) < self.n_parcels:
            raise AlanError(f"parcel {parcel} outside 0..{self.n_parcels - 1}")
        with self.lock:
            self.model.interior_[int(parcel)] = not self.model.interior_[int(parcel)]
            self._changed()
            return bool(self.model.interior_[int(parcel)])

    def parcel_at(self, index: int, frame: int, row: int, col: int) -> int:
        """The parcel class at pixel (row, col) of a work-size frame."""
        parcels = self.open(index).parcels
        if not (0 <= frame < len(parcels) and 0 <= row < parcels.shape[1] and 0 <= col < parcels.shape[2]):
            raise AlanError(f"pixel ({row}, {col}) of frame {frame} is outside the record "
                            f"({len(parcels)} frames of {parcels.shape[1]}x{parcels.shape[2]})")
        return int(parcels[frame, row, col])

    def toggle_at(self, index: int, frame: int, row: int, col: int) -> tuple[int, bool]:
        """Toggle the parcel class under a clicked pixel; returns (class, now in the target)."""
        parcel = self.parcel_at(index, frame, row, col)
        return parcel, self.toggle(parcel)

    def _changed(self) -> None:
        self.version += 1
        self._masks.clear()

    # ------------------------------------------------------------------ records
    def open(self, index: int) -> OpenRecord:
        """Frames and parcels of record `index`, computed once and cached."""
        if not 0 <= index < len(self.records):
            raise AlanError(f"record {index} outside 0..{len(self.records) - 1}")
        with self.lock:
            if index in self._open:
                self._open.move_to_end(index)
                return self._open[index]
            rec = self.records[index]
            frames = np.asarray(rec.frames)
            if frames.ndim == 2:
                frames = frames[None]
            work = to_work(list(frames), self.parcellator.work_size)
            opened = OpenRecord(rec, work, parcellate(self.parcellator, work), tuple(frames.shape[1:]),
                                self._truth_of(rec))
            self._open[index] = opened
            # kept after the record leaves the cache, so DICE covers every record opened
            self._scored[index] = [(f, p, opened.parcels[f], opened.frames[f], m) for f, (p, m) in opened.truth.items()]
            while len(self._open) > self.cache:
                self._open.popitem(last=False)
            return opened

    def _truth_of(self, rec: Record) -> dict[int, tuple[str, np.ndarray]]:
        got = collect_annotated([rec], self.target)
        idx = {p: getattr(rec, p.lower()) for p in PHASES}
        return {idx[p]: (p, m) for p, m in zip(got.phases, got.masks)}

    def has_truth(self) -> bool:
        """Whether any record says it has annotated ED/ES frames (known without decoding)."""
        return any(any(i is not None and i in r.annotated for i in (r.ed, r.es)) for r in self.records)

    # ------------------------------------------------------------------ predictions
    def mask(self, index: int, frame: int) -> np.ndarray:
        """The post-processed target mask (s, s) of one work-size frame (`ParcelToSegment.predict`)."""
        opened = self.open(index)
        if not 0 <= frame < len(opened.parcels):
            raise AlanError(f"frame {frame} outside 0..{len(opened.parcels) - 1}")
        with self.lock:
            key = (index, frame, self.version)
            if key not in self._masks:
                self._remember(key, self.model.predict(opened.parcels[frame], opened.frames[frame]))
            return self._masks[key]

    def masks(self, index: int) -> np.ndarray:
        """Post-processed masks (T, s, s) of every frame of a record."""
        opened = self.open(index)
        with self.lock:
            key = (index, None, self.version)
            if key not in self._masks:
                self._remember(key, self.model.predict(opened.parcels, opened.frames))
            return self._masks[key]

    def _remember(self, key: tuple, value: np.ndarray) -> None:
        self._masks[key] = value
        while len(self._masks) > 4 * self.cache:
            self._masks.popitem(last=False)

    def area_curve(self, index: int) -> np.ndarray:
        """Target area per frame (pixels at the record's native resolution, as `alan analyze` counts it)."""
        opened = self.open(index)
        native = masks_to_native(self.masks(index), [opened.shape] * len(opened.parcels))
        return np.array([m.sum() for m in native], dtype=float)

    def dice(self, indices: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """DICE at native resolution on the annotated ED/ES frames of the records opened (or `indices`)."""
        rows = []
        if indices is not None:
            for i in indices:
                self.open(i)
        with self.lock:
            for i in sorted(self._scored if indices is None else set(indices)):
                for frame, phase, parcels, image, truth in self._scored[i]:
                    work = self._masks.get((i, frame, self.version))
                    if work is None:
                        work = self.model.predict(parcels, image)
                    pred = masks_to_native(work[None], [truth.shape])[0]
                    rows.append({"record": self.records[i].id, "index": i, "frame": int(frame), "phase": phase,
                                 "dice": float(dice(pred, truth))})
        return rows

    # ------------------------------------------------------------------ fit, load, save
    def fit(self, records: Sequence[Record], **hyper: Any) -> ParcelToSegment:
        """Start from the fitted rule on `records` (what `alan segment fit` runs)."""
        model = fit_segmenter(self.parcellator, list(records), self.target, **hyper)
        self.set_model(model)
        return model

    def load(self, path: str | Path) -> ParcelToSegment:
        """Edit a saved model (`alan segment fit` output or an earlier pick)."""
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: no such model file")
        if path.stat().st_size > MAX_MODEL_BYTES:
            raise ArtifactError(f"{path}: too large to be a parcel-to-segment model")
        try:
            model = ParcelToSegment.from_json(path)
        except UnicodeDecodeError:
            raise ArtifactError(f"{path}: not a parcel-to-segment model (not a text file)") from None
        self.set_model(model)
        return model

    def save(self, path: str | Path, by: str | None = None) -> dict[str, Any]:
        """Write the current model atomically as `segment fit` JSON with ``"source": "picked"``."""
        check_model_output(path)
        with self.lock:
            doc = picked_document(self.model, by)
        atomic_write_json(path, doc)
        return doc
