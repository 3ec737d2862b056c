"""Intensity transforms: one definition of how a frame's gray levels become model input.

Used by training (DINO frames, RAPTOR clips) and inference (`alan.models.parcellator`) alike, so
a frame of a video reaches the backbone as the same tensor in both. `match_gray` maps a frame's
gray levels onto a backbone's stored reference (`gray_reference`, see `BackboneConfig`): by full
histogram matching, or by fitting a gain and a gamma only (`GRAY_METHODS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

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


#: Gray levels (of 255) at or below which a pixel counts as outside the imaged sector: echo
#: scanners and the public datasets write the area outside the fan as black.
OUTSIDE_LEVEL = 1

#: Points of a stored gray reference: its quantile function at 0, 1/256, ..., 1.
REFERENCE_POINTS = 257

#: How `match_gray` maps a frame onto a reference: "histogram" (any increasing gray curve is
#: undone, and the frame's content is forced onto the reference's histogram too) or "gain-gamma"
#: (a fitted y = a x^g: two numbers per frame, so a frame with more blood pool than the reference
#: keeps it).
GRAY_METHODS: tuple[str, ...] = ("histogram", "gain-gamma")

#: Quantile probabilities at which "gain-gamma" compares a frame with its reference (the tails,
#: where speckle and saturation live, are left out).
CURVE_PROBS: tuple[float, ...] = tuple(float(p) for p in np.linspace(0.05, 0.95, 19))

#: Bounds of a fitted gamma: a frame that asks for more (nearly uniform, say) is not bent further.
GAMMA_RANGE = (0.25, 4.0)


def gray_histogram(frames: np.ndarray) -> np.ndarray:
    """Counts of the 256 gray levels of a stack (uint8, or float in [0, 1] rounded to levels)."""
    frames = np.asarray(frames)
    levels = frames if frames.dtype == np.uint8 else to_uint8(np.clip(frames, 0, 1))
    return np.bincount(levels.ravel(), minlength=256).astype(np.int64)


def gray_reference(histogram: np.ndarray, points: int = REFERENCE_POINTS) -> list[float]:
    """The quantile function (in [0, 1], at `points` even steps) of the in-sector gray levels that
    `histogram` (256 counts) counts: the inverse of the mid-rank CDF that `match_gray` uses, so a
    frame with exactly this histogram is matched to itself."""
    h = np.asarray(histogram, dtype=np.float64).copy()
    if h.shape != (256,):
        raise ValueError(f"a gray histogram has 256 counts, got shape {h.shape}")
    h[: OUTSIDE_LEVEL + 1] = 0
    if h.sum() <= 0:
        raise ValueError(f"no pixel above gray level {OUTSIDE_LEVEL}: nothing to take a gray reference from")
    cdf = (np.cumsum(h) - 0.5 * h) / h.sum()
    used = np.flatnonzero(h)
    q = np.interp(np.linspace(0.0, 1.0, points), cdf[used], used.astype(np.float64))
    return [float(v) / 255.0 for v in q]


def _level_histograms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame 8-bit levels (N, P) and in-sector level counts (N, 256) of frames in [0, 1]."""
    n = x.shape[0]
    levels = (x.float().clamp(0, 1) * 255.0).round().long().reshape(n, -1)
    hist = torch.zeros(n, 256, device=x.device).scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float32))
    hist[:, : OUTSIDE_LEVEL + 1] = 0
    return levels, hist


def gray_quantiles(hist: torch.Tensor, probs: Sequence[float]) -> torch.Tensor:
    """Quantiles in [0, 1] of in-sector level counts (N, 256) at `probs`: the mid-rank CDF of the
    used levels inverted linearly between them, as `gray_reference` does (np.interp): (N, len(probs))."""
    n = len(hist)
    cdf = (hist.cumsum(1) - 0.5 * hist) / hist.sum(1, keepdim=True).clamp_min(1.0)
    levels = torch.arange(256, device=hist.device).expand(n, -1)
    last_used = torch.where(hist > 0, levels, torch.full_like(levels, -1)).cummax(1).values
    flat = torch.where(hist > 0, cdf, torch.full_like(cdf, -1.0)).cummax(1).values  # non-decreasing
    p = torch.as_tensor(probs, dtype=cdf.dtype, device=cdf.device).expand(n, -1).contiguous()
    hi = torch.searchsorted(flat, p)  # the first used level whose CDF reaches p (256: none does)
    above = hi > 255
    hi = hi.clamp(max=255)
    lo = last_used.gather(1, (hi - 1).clamp_min(0))
    below = (hi == 0) | (lo < 0)
    lo_c = lo.clamp_min(0)
    c0, c1 = cdf.gather(1, lo_c), cdf.gather(1, hi)
    w = ((p - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0, 1)
    q = lo_c.float() + w * (hi - lo_c).float()
    q = torch.where(below, hi.float(), q)
    q = torch.where(above, last_used[:, 255:].float().expand_as(q), q)
    return q / 255.0


def fit_gain_gamma(frame_q: torch.Tensor, reference_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares fit of log r = log a + g log q over matched quantiles (N, P) -> (a, g), each (N,);
    g is kept within `GAMMA_RANGE` (and a refitted for it)."""
    lx = frame_q.clamp_min(1.0 / 255.0).log()
    ly = reference_q.clamp_min(1.0 / 255.0).log().expand_as(lx)
    mx, my = lx.mean(1, keepdim=True), ly.mean(1, keepdim=True)
    var = ((lx - mx) ** 2).sum(1)
    g = torch.where(var > 1e-12, ((lx - mx) * (ly - my)).sum(1) / var.clamp_min(1e-12), torch.ones_like(var))
    g = g.clamp(*GAMMA_RANGE)
    a = (my[:, 0] - g * mx[:, 0]).exp()
    return a, g


def match_gray(frames: torch.Tensor, reference: Sequence[float] | torch.Tensor,
               method: str = "histogram") -> torch.Tensor:
    """Each frame's in-sector pixels mapped onto a stored gray reference (`GRAY_METHODS`).

    (N, H, W) or (N, 1, H, W) float in [0, 1] -> the same shape. A pixel's gray level is replaced
    by the reference quantile at the pixel's mid-rank within its own frame; pixels at or below
    `OUTSIDE_LEVEL` keep their value. Any monotone change of the gray scale (gain, gamma, log
    compression) gives the same output, so a backbone sees frames of another scanner setting as
    it saw its training frames. Levels are those of 8-bit video (the input is rounded to 1/255).

    With ``method="gain-gamma"`` a pixel's level x becomes min(a x^g, 1) instead, with a and g fitted
    (`fit_gain_gamma`) so that the frame's in-sector quantiles at `CURVE_PROBS` meet the reference's:
    a gain or gamma change is undone, but a frame's histogram keeps its own shape.
    """
    if method not in GRAY_METHODS:
        raise ValueError(f"unknown gray-matching method {method!r}; expected one of {', '.join(GRAY_METHODS)}")
    x = torch.as_tensor(frames)
    ref = torch.as_tensor(reference, dtype=torch.float32, device=x.device)
    levels, hist = _level_histograms(x)
    own = torch.arange(256, device=x.device, dtype=torch.float32) / 255.0
    if method == "gain-gamma":
        probs = torch.as_tensor(CURVE_PROBS, dtype=torch.float32, device=x.device)
        pos = probs * (len(ref) - 1)
        i0 = pos.floor().long().clamp(0, len(ref) - 2)
        ref_q = ref[i0] * (1 - (pos - i0)) + ref[i0 + 1] * (pos - i0)
        a, g = fit_gain_gamma(gray_quantiles(hist, CURVE_PROBS), ref_q[None])
        table = (a[:, None] * own[None].clamp_min(1e-12) ** g[:, None]).clamp(0, 1)
    else:
        cdf = (hist.cumsum(1) - 0.5 * hist) / hist.sum(1, keepdim=True).clamp_min(1.0)
        pos = cdf * (len(ref) - 1)
        i0 = pos.floor().long().clamp(0, len(ref) - 2)
        w = pos - i0
        table = ref[i0] * (1 - w) + ref[i0 + 1] * w
    table[:, : OUTSIDE_LEVEL + 1] = own[: OUTSIDE_LEVEL + 1]
    return table.gather(1, levels).reshape(x.shape).to(x.dtype if x.is_floating_point() else torch.float32)
