"""Gray-level matching: `match_gray` against a plain rank restatement and skimage, its invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from skimage.exposure import match_histograms

from alan.transforms.intensity import OUTSIDE_LEVEL, REFERENCE_POINTS, gray_histogram, gray_reference, match_gray


def _sector_frame(seed: int, size: int = 48) -> np.ndarray:
    """uint8 frame: black outside a disc, speckle-like levels inside, dark pool in the middle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    img = rng.gamma(2.0, 30.0, (size, size)) * np.where(r < size / 6, 0.3, 1.0)
    img = np.clip(img, 2, 255).round().astype(np.uint8)
    img[r >= size / 2 - 2] = 0
    return img


def _oracle(frame: np.ndarray, reference: list[float]) -> np.ndarray:
    """Each inside pixel -> the reference quantile at its mid-rank ((average rank - 1/2) / n)."""
    out = frame.astype(np.float64) / 255.0
    inside = frame > OUTSIDE_LEVEL
    ranks = (rankdata(frame[inside], method="average") - 0.5) / inside.sum()
    out[inside] = np.interp(ranks, np.linspace(0, 1, len(reference)), reference)
    return out


def test_match_gray_is_the_reference_quantile_at_each_pixels_mid_rank():
    frames = np.stack([_sector_frame(s) for s in range(3)])
    ref = gray_reference(gray_histogram(_sector_frame(10)))
    got = match_gray(torch.from_numpy(frames).float() / 255, ref).numpy()
    for f, g in zip(frames, got):
        np.testing.assert_allclose(g, _oracle(f, ref), atol=1e-5)
        assert (g[f <= OUTSIDE_LEVEL] == f[f <= OUTSIDE_LEVEL] / 255.0).all()  # outside the sector: unchanged


def test_match_gray_agrees_with_skimage_match_histograms_inside_the_sector():
    src, tmpl = _sector_frame(1), (np.clip(_sector_frame(2).astype(float) * 1.7, 0, 255)).astype(np.uint8)
    ours = match_gray(torch.from_numpy(src[None]).float() / 255, gray_reference(gray_histogram(tmpl)))[0].numpy()
    inside = src > OUTSIDE_LEVEL
    theirs = match_histograms(src[inside].astype(float), tmpl[tmpl > OUTSIDE_LEVEL].astype(float)) / 255.0
    # two conventions for a tied level's CDF (mid-rank here, upper rank in skimage): a few levels apart
    assert np.abs(ours[inside] - theirs).mean() < 3 / 255


def test_a_frames_own_histogram_is_matched_to_itself():
    f = _sector_frame(3)
    out = match_gray(torch.from_numpy(f[None]).float() / 255, gray_reference(gray_histogram(f)))[0].numpy()
    err = np.abs(out - f / 255.0)
    # exact up to the reference's 257-point interpolation, which is coarse only in the sparse bright tail
    assert err.mean() < 0.5 / 255 and np.percentile(err, 99) < 2 / 255


def test_any_increasing_gray_curve_gives_the_same_output():
    f = _sector_frame(4)
    ref = gray_reference(gray_histogram(_sector_frame(5)))
    base = match_gray(torch.from_numpy(f[None]).float() / 255, ref)
    rng = np.random.default_rng(0)
    curve = np.r_[0, 1, np.sort(rng.choice(np.arange(2, 256), 254, replace=False))]  # strictly increasing, inside stays inside
    curve = np.r_[0, 1, np.arange(2, 256)] if len(np.unique(curve)) < 256 else curve
    remapped = curve[f].astype(np.uint8)
    torch.testing.assert_close(match_gray(torch.from_numpy(remapped[None]).float() / 255, ref), base)
    # a gamma curve merges a few levels after rounding: the same output within a level or two
    gamma = np.clip(np.round(255 * (f / 255.0) ** 0.5), 0, 255).astype(np.uint8)
    gamma[f <= OUTSIDE_LEVEL] = f[f <= OUTSIDE_LEVEL]
    out = match_gray(torch.from_numpy(gamma[None]).float() / 255, ref)
    assert (out - base).abs().mean() < 1 / 255


def test_shapes_uint8_and_batch_independence():
    frames = np.stack([_sector_frame(s) for s in range(4)])
    ref = gray_reference(gray_histogram(frames))
    batch = match_gray(torch.from_numpy(frames[:, None]).float() / 255, ref)
    assert batch.shape == (4, 1, 48, 48)
    one = match_gray(torch.from_numpy(frames[2:3]).float() / 255, ref)
    torch.testing.assert_close(batch[2, 0], one[0])


def test_gray_reference_shape_and_refusals():
    ref = gray_reference(gray_histogram(_sector_frame(0)))
    assert len(ref) == REFERENCE_POINTS and all(b >= a for a, b in zip(ref, ref[1:])) and 0 <= ref[0] and ref[-1] <= 1
    assert np.isclose(gray_histogram(np.zeros((2, 5, 5), np.float32)).sum(), 50)
    with pytest.raises(ValueError, match="256 counts"):
        gray_reference(np.ones(10))
    with pytest.raises(ValueError, match="nothing to take"):
        gray_reference(np.r_[5, 5, np.zeros(254)])
