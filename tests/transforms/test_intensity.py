"""Gray-level matching: `match_gray` against a plain rank restatement and skimage, its invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from skimage.exposure import match_histograms

from alan.transforms.intensity import (
    CURVE_PROBS,
    GAMMA_RANGE,
    OUTSIDE_LEVEL,
    REFERENCE_POINTS,
    fit_gain_gamma,
    gray_histogram,
    gray_quantiles,
    gray_reference,
    match_gray,
)


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


def _np_quantiles(frame: np.ndarray, probs) -> np.ndarray:
    """The mid-rank CDF of the used in-sector levels, inverted by np.interp (as `gray_reference`)."""
    h = gray_histogram(frame).astype(float)
    h[: OUTSIDE_LEVEL + 1] = 0
    cdf = (np.cumsum(h) - 0.5 * h) / h.sum()
    used = np.flatnonzero(h)
    return np.interp(probs, cdf[used], used) / 255.0


@pytest.mark.parametrize("seed", range(6))
def test_gray_quantiles_invert_the_mid_rank_cdf_like_np_interp(seed):
    rng = np.random.default_rng(seed)
    f = _sector_frame(seed)
    if seed % 2:
        f = (f // 23 * 23).astype(np.uint8)  # sparse levels: gaps between used levels
    probs = np.r_[0.0, 1e-4, np.sort(rng.uniform(0, 1, 9)), 1 - 1e-4, 1.0]
    h = torch.from_numpy(gray_histogram(f).astype(np.float32))
    h[: OUTSIDE_LEVEL + 1] = 0
    np.testing.assert_allclose(gray_quantiles(h[None], probs)[0].numpy(), _np_quantiles(f, probs), atol=1e-5)
    # the reference a histogram gives is its own quantile function
    ref = gray_reference(gray_histogram(f))
    np.testing.assert_allclose(gray_quantiles(h[None], np.linspace(0, 1, REFERENCE_POINTS))[0].numpy(), ref, atol=1e-5)


def test_fit_gain_gamma_is_the_log_log_least_squares_line():
    rng = np.random.default_rng(0)
    q = np.sort(rng.uniform(0.05, 0.9, (3, 19)), axis=1)
    r = np.clip(0.8 * q ** 1.3 * np.exp(rng.normal(0, 0.05, q.shape)), 0.01, 1)
    a, g = fit_gain_gamma(torch.tensor(q, dtype=torch.float32), torch.tensor(r, dtype=torch.float32))
    for i in range(3):
        slope, intercept = np.polyfit(np.log(q[i]), np.log(r[i]), 1)
        assert np.isclose(g[i].item(), slope, atol=1e-4) and np.isclose(a[i].item(), np.exp(intercept), rtol=1e-4)
    # a gamma outside the range is clamped, and the gain refitted for the clamped gamma
    q = np.linspace(0.6, 0.9, 19)[None]
    a, g = fit_gain_gamma(torch.tensor(q, dtype=torch.float32), torch.tensor(q ** 9, dtype=torch.float32))
    assert g.item() == GAMMA_RANGE[1]
    assert np.isclose(np.log(a.item()), np.mean(9 * np.log(q[0]) - GAMMA_RANGE[1] * np.log(q[0])), atol=1e-4)


@pytest.mark.parametrize("curve", [lambda v: 2.0 * v, lambda v: 0.6 * v, lambda v: v ** 0.5, lambda v: v ** 1.5,
                                   lambda v: 1.3 * v ** 0.7])
def test_gain_gamma_undoes_a_gain_and_a_gamma(curve):
    f = np.stack([_sector_frame(s, size=96) for s in (6, 7)])
    base = torch.from_numpy(f).float() / 255
    ref = gray_reference(gray_histogram(f))
    changed = torch.from_numpy(np.clip(np.round(255 * curve(f / 255.0)), 0, 255).astype(np.uint8)).float() / 255
    changed[base <= OUTSIDE_LEVEL / 255] = base[base <= OUTSIDE_LEVEL / 255]
    out = match_gray(changed, ref, method="gain-gamma")
    inside = base > OUTSIDE_LEVEL / 255
    before = (changed - base).abs()[inside].mean()
    after = (out - base).abs()[inside & (base < 0.9)].mean()  # a gain of 2 clips the brightest levels for good
    # what is left is rounding: a gamma of 1.5 merges the darkest levels for good
    assert before > 10 / 255 and after < 0.25 * before and after < 5 / 255


def test_gain_gamma_output_is_the_fitted_power_curve():
    ref = gray_reference(gray_histogram(np.stack([_sector_frame(s) for s in range(4)])))
    f = _sector_frame(9)
    inside = f > OUTSIDE_LEVEL
    out = match_gray(torch.from_numpy(f[None]).float() / 255, ref, method="gain-gamma")[0].numpy()
    hist = torch.from_numpy(np.where(np.arange(256) > OUTSIDE_LEVEL, gray_histogram(f), 0)[None].astype(np.float32))
    ref_q = np.interp(CURVE_PROBS, np.linspace(0, 1, REFERENCE_POINTS), ref)
    a, g = fit_gain_gamma(gray_quantiles(hist, CURVE_PROBS), torch.tensor(ref_q, dtype=torch.float32)[None])
    np.testing.assert_allclose(out[inside], np.minimum(a.item() * (f[inside] / 255.0) ** g.item(), 1), atol=1e-5)
    assert (out[~inside] == f[~inside] / 255.0).all()


def test_match_gray_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="gain-gamma"):
        match_gray(torch.zeros(1, 4, 4), np.linspace(0, 1, REFERENCE_POINTS), method="log")
