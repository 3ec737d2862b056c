"""Intensity transforms: one definition of how a frame's gray levels become model input.

Used by training (DINO frames, RAPTOR clips) and inference (`alan.models.parcellator`) alike, so
a frame of a video reaches the backbone as the same tensor in both.
"""

from __future__ import annotations

import numpy as np

#: Percentiles between which frames that are neither uint8 nor in [0, 1] (MR intensities) are scaled.
PERCENTILES = (0.5, 99.5)


def to_unit(frames: np.ndarray) -> np.ndarray:
    """Frames -> float32 in [0, 1]: uint8 / 255; floats already in [0, 1] as they are; anything
    else (MR intensities) min-max scaled between its 0.5th and 99.5th percentiles, clipped."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / 255.0
    x = frames.astype(np.float32)
    if x.size == 0 or (np.issubdtype(frames.dtype, np.floating) and x.min() >= 0 and x.max() <= 1):
        return x
    lo, hi = np.percentile(x, PERCENTILES)
    return np.clip((x - lo) / max(hi - lo, 1e-8), 0, 1).astype(np.float32)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Frames -> uint8: `to_unit`, then rounded to 0..255 (uint8 input unchanged)."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return np.clip(np.rint(to_unit(frames) * 255.0), 0, 255).astype(np.uint8)


def scale_by_percentile(frames: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """float32 [0, 1] by 0 (or the minimum, if negative) and the stack's `percentile`, clipped above
    (the SSCL paper's CMR normalisation)."""
    x = np.asarray(frames, dtype=np.float32)
    lo = min(float(x.min()), 0.0) if x.size else 0.0
    hi = float(np.percentile(x, percentile)) if x.size else 1.0
    if hi <= lo:
        hi = float(x.max()) if x.size and x.max() > lo else lo + 1.0
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)
