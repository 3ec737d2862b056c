"""Smooth parametric shapes shared by the echo and CMR phantoms.

Every structure is a star-shaped region around a fixed centre whose radius depends on the
angle and shrinks or grows with the cardiac contraction ``c`` in [0, 1] (0 at end-diastole,
1 at end-systole), optionally cut by a half-plane (a valve plane). The same closed-form test
gives the pixel masks and, sampled densely, the continuous contours the tracings come from,
so masks, images and tracings agree exactly.
"""

from __future__ import annotations

import numpy as np


def contraction(tau: np.ndarray, systole: float) -> np.ndarray:
    """Normalised contraction over one beat: 0 at ED (``tau`` = 0), 1 at ES (``tau`` = `systole`).

    Half-cosine ejection over [0, systole] and half-cosine filling over [systole, 1]; C1-smooth
    and periodic in ``tau`` with period 1.
    """
    tau = np.mod(np.asarray(tau, dtype=np.float64), 1.0)
    sys = (1.0 - np.cos(np.pi * tau / systole)) / 2.0
    dia = (1.0 + np.cos(np.pi * (tau - systole) / (1.0 - systole))) / 2.0
    return np.where(tau <= systole, sys, dia)


def ellipse_radius(theta: np.ndarray, a: float, b: float, p: float = 2.0) -> np.ndarray:
    """Radius of the superellipse |x/a|^p + |y/b|^p = 1 along direction `theta`."""
    c = np.abs(np.cos(theta)) / a
    s = np.abs(np.sin(theta)) / b
    return (c**p + s**p) ** (-1.0 / p)


def fourier_wobble(theta: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """1 + sum_k eps_k cos(k theta + phi_k) for k = 2.. ; `coeffs` is (n, 2) of (eps, phi)."""
    out = np.ones_like(theta, dtype=np.float64)
    for k, (eps, phi) in enumerate(coeffs, start=2):
        out = out + eps * np.cos(k * theta + phi)
    return out


def random_wobble(rng: np.random.Generator, n: int = 3, scale: float = 0.03) -> np.ndarray:
    """Random low-order shape coefficients (eps ~ |N(0, scale/k)|, phase uniform)."""
    k = np.arange(2, n + 2)
    return np.stack([np.abs(rng.normal(0.0, scale, n)) / (k / 2.0), rng.uniform(0, 2 * np.pi, n)], axis=1)


def to_local(x: np.ndarray, y: np.ndarray, origin: tuple[float, float], phi: float, scale: float = 1.0):
    """Coordinates of image points (x, y) in a frame placed at `origin`, rotated by `phi`, scaled."""
    dx, dy = x - origin[0], y - origin[1]
    c, s = np.cos(phi), np.sin(phi)
    return (c * dx + s * dy) / scale, (-s * dx + c * dy) / scale


def from_local(u: np.ndarray, v: np.ndarray, origin: tuple[float, float], phi: float, scale: float = 1.0):
    """Inverse of `to_local`."""
    c, s = np.cos(phi), np.sin(phi)
    return origin[0] + scale * (c * u - s * v), origin[1] + scale * (s * u + c * v)


def chord_crossings(px: np.ndarray, py: np.ndarray, q: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Signed distances s along direction `n` at which the line q + s n crosses the closed polygon."""
    ax, ay = px, py
    bx, by = np.roll(px, -1), np.roll(py, -1)
    ex, ey = bx - ax, by - ay
    # Solve q + s n = a + r e  for (s, r); cross products in 2-D.
    den = n[0] * ey - n[1] * ex
    ok = np.abs(den) > 1e-12
    wx, wy = ax - q[0], ay - q[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (wx * ey - wy * ex) / den
        r = (wx * n[1] - wy * n[0]) / den
    hit = ok & (r >= 0) & (r < 1)
    return s[hit]


def disk_chords(px: np.ndarray, py: np.ndarray, apex: np.ndarray, base: np.ndarray, n: int = 20) -> np.ndarray:
    """Method-of-disks chords of a closed contour: (n, 4) rows (x1, y1, x2, y2).

    Chord i is perpendicular to the long axis base -> apex at distance (i + 0.5) L / n from the
    base; its ends are the nearest contour crossings on either side of the axis. Row order is
    base to apex; (x1, y1) is on the side of the axis's left normal.
    """
    axis = apex - base
    length = float(np.hypot(*axis))
    d = axis / length
    normal = np.array([-d[1], d[0]])
    rows = np.empty((n, 4))
    for i in range(n):
        q = base + d * length * (i + 0.5) / n
        s = chord_crossings(px, py, q, normal)
        pos, neg = s[s > 0], s[s <= 0]
        s1 = pos.min() if pos.size else 0.0
        s2 = neg.max() if neg.size else 0.0
        rows[i, :2] = q + s1 * normal
        rows[i, 2:] = q + s2 * normal
    return rows


def disks_volume(chords: np.ndarray, length: float) -> float:
    """Single-plane method of disks: sum of pi (d/2)^2 h over the chords, h = length / n."""
    d = np.hypot(chords[:, 0] - chords[:, 2], chords[:, 1] - chords[:, 3])
    return float(np.sum(np.pi * (d / 2.0) ** 2) * length / len(chords))


def biplane_volume(chords_a: np.ndarray, chords_b: np.ndarray, length: float) -> float:
    """Biplane method of disks: sum of pi/4 a_i b_i h, h = length / n."""
    da = np.hypot(chords_a[:, 0] - chords_a[:, 2], chords_a[:, 1] - chords_a[:, 3])
    db = np.hypot(chords_b[:, 0] - chords_b[:, 2], chords_b[:, 1] - chords_b[:, 3])
    return float(np.sum(np.pi / 4.0 * da * db) * length / len(da))
