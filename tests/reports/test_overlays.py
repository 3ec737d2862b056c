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


def test_overlay_frames_are_boundary_overlays():
    """The vectorised per-recording overlay draws exactly `boundary_overlay`'s pixels."""
    from alan.reports.overlays import boundary_overlay, overlay_frames

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:30, :40]
    parcels = np.stack([((yy // 7 + xx // 9 + i) % 6) for i in range(5)]).astype(np.uint8)
    masks = {"LV": rng.random((5, 30, 40)) < 0.3, "LA": (yy < 10)[None].repeat(5, 0)}
    for frames in ((rng.random((5, 30, 40)) * 255).astype(np.uint8), rng.normal(100, 30, (5, 30, 40))):
        for scale in (1, 3):
            got = list(overlay_frames(frames, parcels, masks, scale))
            assert len(got) == 5
            for i, rgb in enumerate(got):
                want = boundary_overlay(frames[i], parcels[i], {k: m[i] for k, m in masks.items()}, scale)
                assert rgb.dtype == np.uint8 and np.array_equal(rgb, want)
    assert np.array_equal(next(overlay_frames(frames, parcels, None, 2)), boundary_overlay(frames[0], parcels[0], None, 2))
