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


def test_write_h264_round_trip_with_one_encoder_thread(tmp_path):
    """The H.264 file decodes back to the frames written (lossy: close, not equal), in number and
    size, with x264's own thread choice and with one thread (what `analyze` uses)."""
    import cv2

    from alan.reports.overlays import write_h264

    yy, xx = np.mgrid[:48, :64]
    frames = [np.stack([(xx * 4 + 8 * i) % 256, yy * 5, np.full_like(xx, 128)], -1).astype(np.uint8) for i in range(9)]
    for threads in (None, 1):
        path = write_h264(tmp_path / f"t{threads}.mp4", iter(frames), fps=20.0, preset="ultrafast", crf=18,
                          threads=threads)
        cap = cv2.VideoCapture(str(path))
        got = []
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            got.append(bgr[..., ::-1])
        cap.release()
        assert len(got) == len(frames) and got[0].shape == frames[0].shape
        assert max(np.abs(g.astype(int) - f.astype(int)).mean() for g, f in zip(got, frames)) < 6
