"""Short-axis cine CMR as arrays for SSCL: ED/ES frames, heart masks, full or segmented input.

SSCL paper section 3.1: the anatomic prior is a heart mask, the union of the LV blood pool, the LV
myocardium and the RV; the *segmented* input is the image multiplied by that mask (optionally
dilated by `margin` pixels at the native resolution, so a rim of context survives).

Mask sources:
    `GroundTruthMasks`  the dataset's own annotations ("gt"); frames without annotation (cine
                        frames other than ED/ES) get the union of the annotated frames' masks.
    `alan.pipelines.sscl.masks.AlanMasks` ("alan", inference, so not in this data layer): locked backbone + RAPTOR head -> parcel maps ->
                        parcel-to-segment model(s), the predictions of several models OR-ed (LV,
                        MYO and RV models). This is the link between the two methods.

Intensities: MR comes in its native dtype with arbitrary scale, so each slice's cine is scaled to
[0, 1] by its own 0 and 99.5th percentile (clipped) before anything else, then stored as uint8.
Geometry: each frame is zero-padded to a square (centred) and resized to `size` (bilinear with
antialiasing; masks by nearest). Slices whose heart mask is empty at ED or ES are left out (the
same slices for full and segmented input, so both conditions see the same samples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from scipy import ndimage

from alan.errors import DataError
from alan.records import Record
from alan.transforms.intensity import scale_by_percentile, to_uint8
from alan.transforms.spatial import pad_to_square

HEART_LABELS: tuple[str, ...] = ("LV", "MYO", "RV")
INPUTS: tuple[str, ...] = ("full", "segmented")


# ------------------------------------------------------------------------------- masks
def heart_mask(masks: Mapping[str, np.ndarray], labels: Sequence[str] = HEART_LABELS) -> np.ndarray:
    """Union of the `labels` present in one frame's masks (bool (H, W))."""
    present = [np.asarray(masks[k], dtype=bool) for k in labels if k in masks]
    if not present:
        raise KeyError(f"none of {', '.join(labels)} in masks with {', '.join(masks) or 'no labels'}")
    return np.logical_or.reduce(present)


def disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (yy * yy + xx * xx) <= radius * radius


def dilate(mask: np.ndarray, margin: int) -> np.ndarray:
    """Dilate a bool mask (H, W) or a stack (F, H, W) frame by frame with a disk of `margin` px."""
    mask = np.asarray(mask, dtype=bool)
    if margin <= 0:
        return mask
    se = disk(int(margin))
    if mask.ndim == 3:
        se = se[None]
    return ndimage.binary_dilation(mask, structure=se)


class MaskSource(Protocol):
    """Heart masks for some frames of a record: returns bool (len(frames), H, W)."""

    name: str

    def __call__(self, record: Record, frames: Sequence[int], cine: np.ndarray) -> np.ndarray: ...


@dataclass
class GroundTruthMasks:
    """Heart masks from the dataset's annotations (union of `labels`)."""

    labels: tuple[str, ...] = HEART_LABELS
    name: str = "gt"

    def __call__(self, record: Record, frames: Sequence[int], cine: np.ndarray) -> np.ndarray:
        masks = record.masks
        if not masks:
            raise DataError(record.source or record.id,
                            f"record {record.id} has no ground-truth masks for the segmented input "
                            "(use the alan mask source)")
        per = {f: heart_mask(m, self.labels) for f, m in masks.items()}
        union = np.logical_or.reduce(list(per.values()))
        return np.stack([per.get(f, union) for f in frames])

    def config(self) -> dict[str, Any]:
        return {"source": self.name, "labels": list(self.labels)}


# ------------------------------------------------------------------------------- images
@dataclass
class CMRSlices:
    """ED/ES frames of short-axis slices as arrays, index 0 = ED, 1 = ES along axis 1.

    `full` and `segmented` are uint8 (N, 2, S, S); `masks` bool (N, 2, S, S) (the dilated heart
    masks actually applied); `segmented`/`masks` are None when no mask source was given.
    """

    full: np.ndarray
    segmented: np.ndarray | None
    masks: np.ndarray | None
    labels: np.ndarray
    patients: np.ndarray
    splits: np.ndarray
    ids: list[str]
    size: int
    margin: int = 0
    mask_config: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def images(self, input: str) -> np.ndarray:
        """The (N, 2, S, S) uint8 images for `input` ("full" or "segmented")."""
        if input == "full":
            return self.full
        if input == "segmented":
            if self.segmented is None:
                raise DataError(None, "segmented input needs heart masks: give a mask source")
            return self.segmented
        raise ValueError(f"input must be one of {INPUTS}, got {input!r}")

    def subset(self, idx: Sequence[int] | np.ndarray) -> CMRSlices:
        idx = np.asarray(idx, dtype=np.int64)
        pick = (lambda a: None if a is None else a[idx])
        return CMRSlices(self.full[idx], pick(self.segmented), pick(self.masks), self.labels[idx],
                         self.patients[idx], self.splits[idx], [self.ids[i] for i in idx], self.size, self.margin,
                         self.mask_config, dict(self.skipped))


def load_slices(records: Sequence[Record], size: int = 224, mask_source: MaskSource | None = None,
                margin: int = 0, drop_empty: bool = True) -> CMRSlices:
    """ED and ES frames of every record (one short-axis slice each), full and segmented."""
    full, seg, msk, labels, patients, splits, ids = [], [], [], [], [], [], []
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for r in records:
        if r.ed is None or r.es is None:
            skip("ED/ES unknown")
            continue
        cine = r.frames
        frames = [r.ed, r.es]
        x = scale_by_percentile(cine)[frames]
        if mask_source is not None:
            m = dilate(np.asarray(mask_source(r, frames, cine), dtype=bool), margin)
            if drop_empty and not m.reshape(2, -1).any(axis=1).all():
                skip("empty heart mask at ED or ES")
                continue
            seg.append(to_uint8(pad_to_square(x * m, size)))
            msk.append(pad_to_square(m.astype(np.float32), size, nearest=True) > 0.5)
        full.append(to_uint8(pad_to_square(x, size)))
        labels.append(r.label)
        patients.append(r.patient or r.id)
        splits.append(r.split or "")
        ids.append(r.id)
    if not ids:
        raise DataError(None, f"no usable short-axis slices ({skipped or 'no records'})")
    return CMRSlices(
        full=np.stack(full), segmented=np.stack(seg) if seg else None, masks=np.stack(msk) if msk else None,
        labels=np.array(labels, dtype=object), patients=np.array(patients, dtype=object),
        splits=np.array(splits, dtype=object), ids=ids, size=size, margin=margin,
        mask_config=mask_source.config() if mask_source is not None and hasattr(mask_source, "config") else {},
        skipped=skipped,
    )


def load_cine_frames(records: Sequence[Record], size: int = 224, input: str = "full",
                     mask_source: MaskSource | None = None, margin: int = 0) -> np.ndarray:
    """Every cine frame of every record as uint8 (M, S, S) (for pre-training on all frames)."""
    out = []
    for r in records:
        cine = r.frames
        x = scale_by_percentile(cine)
        if input == "segmented":
            if mask_source is None:
                raise DataError(None, "segmented input needs heart masks: give a mask source")
            m = dilate(np.asarray(mask_source(r, range(len(cine)), cine), dtype=bool), margin)
            x = x * m
        out.append(to_uint8(pad_to_square(x, size)))
    return np.concatenate(out) if out else np.zeros((0, size, size), np.uint8)


class FrameDataset(torch.utils.data.Dataset):
    """Single frames (1, S, S) uint8 tensors, what SimCLR pre-training consumes."""

    def __init__(self, frames: np.ndarray):
        self.frames = torch.from_numpy(np.ascontiguousarray(frames)).reshape(-1, 1, *frames.shape[-2:])

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.frames[i]


__all__ = ["CMRSlices", "FrameDataset", "GroundTruthMasks", "HEART_LABELS", "INPUTS", "MaskSource",
           "dilate", "heart_mask", "load_cine_frames", "load_slices"]
