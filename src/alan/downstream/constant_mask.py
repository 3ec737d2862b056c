"""The trivial segmentation baseline: one mask for every frame, whatever the image.

The mean of the fitting frames' target masks (in the working frame), thresholded at
`threshold`, predicted for every test frame. A segmentation method adds something only by
the margin it keeps over this baseline on the same frames: on data where the anatomy always
sits in the same place it can reach high DICE without looking at a pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted


class ConstantMask(BaseEstimator):
    """Predict the thresholded mean training mask for every frame.

    Learnt: `mean_` (H, W) float, the per-pixel frequency of the target in the fitting masks;
    `mask_` (H, W) bool, ``mean_ >= threshold``; `n_images_`.
    """

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def fit(self, masks: Any, y: Any = None) -> ConstantMask:
        """`masks`: bool (N, H, W) target masks of the fitting frames (N >= 1)."""
        m = np.asarray(masks)
        if m.ndim != 3 or len(m) == 0:
            raise ValueError(f"masks must be a non-empty (N, H, W) array, got shape {m.shape}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        self.mean_ = m.astype(bool).mean(axis=0)
        self.mask_ = self.mean_ >= self.threshold
        self.n_images_ = len(m)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """bool (N, H, W): the same mask for each of the N frames (or parcel maps) in `X`."""
        check_is_fitted(self, "mask_")
        n = len(X)
        return np.broadcast_to(self.mask_, (n, *self.mask_.shape)).copy()
