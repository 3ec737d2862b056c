"""`Record`: the one type every reader yields (one video, cine slice or still image).

Frames are decoded lazily: listing a dataset never decodes a video; `record.frames` does.
Orientation is row-major (T, H, W): row 0 is the top of the image as a viewer sees it.
Masks are per annotated frame, per standard label name: ``{frame: {"LV": bool (H, W), ...}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Standard label names shared by every reader.
LABELS: tuple[str, ...] = ("LV", "LA", "MYO", "RV")

FramesFn = Callable[[], np.ndarray]
MasksFn = Callable[[], dict[int, dict[str, np.ndarray]]]


@dataclass
class Record:
    """One sequence (or still image, T=1) and what is known about it.

    Attributes:
        id: unique within its dataset (e.g. ``"0X1A2B3C"``, ``"patient0001_4CH"``).
        load_frames: returns frames (T, H, W); uint8 for echo, native dtype for MR.
        n_frames, height, width: known without decoding (None only if the format hides them).
        load_masks: returns ``{frame_index: {label: bool (H, W)}}`` for annotated frames.
        ed, es: 0-based indices into the frame sequence, None if unknown.
        label: class label (view for echo, diagnosis group for CMR), None if unlabelled.
        split: dataset split name as the dataset spells it in lower case ("train", "val", "test"), or None.
        patient: patient identifier (records of one patient share it).
        spacing: (row, col) pixel spacing in mm, None if unknown.
        source: the main file the frames come from.
        meta: everything else the format says (EF, FPS, volumes, cfg keys ...).
    """

    id: str
    load_frames: FramesFn = field(repr=False)
    n_frames: int | None = None
    height: int | None = None
    width: int | None = None
    load_masks: MasksFn | None = field(default=None, repr=False)
    annotated: tuple[int, ...] = ()
    ed: int | None = None
    es: int | None = None
    label: str | None = None
    split: str | None = None
    patient: str | None = None
    spacing: tuple[float, float] | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> np.ndarray:
        """Decode and return the frames (T, H, W)."""
        return self.load_frames()

    @property
    def masks(self) -> dict[int, dict[str, np.ndarray]]:
        """Load and return the per-frame masks (empty if unannotated)."""
        return {} if self.load_masks is None else self.load_masks()
