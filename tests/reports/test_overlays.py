"""Overlay helpers against skimage."""

import numpy as np
from skimage.segmentation import find_boundaries

from alan.reports.overlays import boundaries


def test_boundaries_are_skimages_find_boundaries():
    rng = np.random.default_rng(0)
    for shape, k in (((20, 31), 5), ((7, 7), 2), ((64, 48), 30)):
        lab = rng.integers(0, k, shape)
        assert np.array_equal(boundaries(lab), find_boundaries(lab + 1, mode="inner"))
        m = rng.random(shape) < 0.4
        assert np.array_equal(boundaries(m) & m, find_boundaries(m, mode="inner"))
