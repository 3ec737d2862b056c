"""Clips for RAPTOR training: 16 frames, one apart (period 2), from a random start (ALAN paper, 4.2).

One item per record per epoch. A video shorter than the clip's span ((length-1)*period+1
frames) is either padded by repeating its last frame (``short="pad"``, the default; EchoNet's
own loader pads with black frames instead, which would teach the head a "blank frame" parcel)
or dropped (``short="skip"``).

Frames come out as float in [0, 1] (see `frames_to_unit`), optionally resized to the
backbone's input size with the same bilinear, antialiased resize `Backbone.prepare` uses, so
that clips of differently sized videos stack into one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from alan.records import Record
from alan.transforms.intensity import to_unit as frames_to_unit  # noqa: F401  (re-exported)
from alan.transforms.spatial import resize_unit  # noqa: F401  (re-exported)


def clip_span(length: int, period: int) -> int:
    return (length - 1) * period + 1


def clip_indices(n_frames: int, length: int = 16, period: int = 2, start: int | None = None,
                 generator: torch.Generator | None = None) -> np.ndarray:
    """Frame indices of one clip; a random start unless given; short videos repeat their last frame."""
    span = clip_span(length, period)
    if start is None:
        start = int(torch.randint(0, n_frames - span + 1, (1,), generator=generator)) if n_frames >= span else 0
    idx = start + period * np.arange(length)
    return np.minimum(idx, n_frames - 1)


class ClipDataset(Dataset):
    """Random clips, one per record: items ``{"index", "frame_idx", "frames"}``.

    Args:
        records: the records to sample (typically one split of a dataset).
        length, period: frames per clip and the step between them (paper: 16 and 2).
        short: "pad" (repeat the last frame) or "skip" (drop records shorter than a clip).
        size: resize frames to size x size (None: keep the native size).
        skip_frames: ``f(index, frame_idx) -> bool``; when true the item carries no frames
            (a feature cache already holds their tokens) and the video is not decoded.
    """

    def __init__(self, records: Sequence[Record], length: int = 16, period: int = 2, short: str = "pad",
                 size: int | None = None, skip_frames: Callable[[int, np.ndarray], bool] | None = None):
        if short not in ("pad", "skip"):
            raise ValueError(f"short must be 'pad' or 'skip', got {short!r}")
        if length < 1 or period < 1:
            raise ValueError("length and period must be >= 1")
        self.length, self.period, self.short, self.size = length, period, short, size
        self.skip_frames = skip_frames
        span = clip_span(length, period)
        kept, counts = [], []
        self.n_skipped = 0
        for r in records:
            n = r.n_frames if r.n_frames is not None else len(r.frames)
            if n < 1 or (short == "skip" and n < span):
                self.n_skipped += 1
                continue
            kept.append(r)
            counts.append(n)
        self.records: list[Record] = kept
        self.n_frames: list[int] = counts

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int, frame_idx: np.ndarray) -> torch.Tensor:
        """The given frames of record `index`, float in [0, 1], resized if `size` is set."""
        frames = frames_to_unit(np.asarray(self.records[index].frames)[frame_idx])
        return resize_unit(frames, self.size) if self.size else torch.from_numpy(frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        idx = clip_indices(self.n_frames[index], self.length, self.period)
        frames = None
        if self.skip_frames is None or not self.skip_frames(index, idx):
            frames = self.load(index, idx)
        return {"index": index, "frame_idx": torch.from_numpy(idx), "frames": frames}


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack indices; stack frames when every item has them of one shape, else keep a list (None where cached)."""
    frames = [it["frames"] for it in items]
    if all(f is not None for f in frames) and len({tuple(f.shape) for f in frames}) == 1:
        frames = torch.stack(frames)
    return {
        "index": torch.tensor([it["index"] for it in items]),
        "frame_idx": torch.stack([it["frame_idx"] for it in items]),
        "frames": frames,
    }
