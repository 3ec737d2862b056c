"""Kass snakes on many closed contours at once: the batched form of skimage's `active_contour`.

Kass, Witkin & Terzopoulos, *Snakes: Active contour models* (IJCV 1988), section 2 and the
appendix: each iteration solves (A + gamma I) x_t = gamma x_{t-1} + f(x_{t-1}), A the periodic
pentadiagonal matrix of the elasticity (alpha) and rigidity (beta) terms, f the gradient of the
image energy. The discretisation, the image energy (w_edge times the Sobel magnitude, read through
an interpolating quadratic spline), the step limit (max_px_move * tanh) and the convergence test
are those of `skimage.segmentation.active_contour` with a periodic boundary and w_line=0, which
is the oracle of the tests. What differs is how, not what:

- every snake of a batch (any lengths, any frames) is one linear system. Each closed snake's
  points are interleaved (0, n-1, 1, n-2, ...), which turns its periodic pentadiagonal matrix
  into a band of half-width 4, so the block-diagonal band of the whole batch is factorised once
  (LAPACK banded Cholesky) instead of one dense n x n inverse per snake and call;
- the energy of every frame is the tensor-product interpolating quadratic spline with FITPACK's
  knots (what `RectBivariateSpline(kx=2, ky=2, s=0)` builds), its coefficients found by one
  matrix product per axis over the whole stack (the collocation inverse cached per size), its
  gradient read at all points at once (Cox-de Boor basis values, arguments clamped to the
  grid, as FITPACK does);
- float64 throughout (skimage computes in the image's float type).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from scipy import linalg
from scipy.interpolate import BSpline
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, depth_first_order

_HALF_BAND = 4  # half-bandwidth of an interleaved periodic pentadiagonal matrix
_CONVERGENCE_ORDER = 10  # skimage's: the snake is compared with its last 10 states every 11th step


def sobel_magnitude(images: np.ndarray) -> np.ndarray:
    """`skimage.filters.sobel` of each frame of a stack (N,H,W): sqrt((g_r^2 + g_c^2) / 2) with
    kernels [1, 0, -1] x [1, 2, 1]/4, mode "reflect" (OpenCV's BORDER_REFLECT), in float64."""
    x = np.asarray(images, dtype=np.float64)
    edge, smooth = np.array([1.0, 0.0, -1.0]), np.array([1.0, 2.0, 1.0]) / 4
    out = np.empty(x.shape)
    for i, frame in enumerate(x):  # OpenCV filters one frame per call, ~5x faster than scipy.ndimage here
        g_r = cv2.sepFilter2D(frame, -1, smooth, edge, borderType=cv2.BORDER_REFLECT)
        g_c = cv2.sepFilter2D(frame, -1, edge, smooth, borderType=cv2.BORDER_REFLECT)
        out[i] = np.sqrt((g_r * g_r + g_c * g_c) / 2)
    return out


def gaussian_stack(images: np.ndarray, sigma: float) -> np.ndarray:
    """`scipy.ndimage.gaussian_filter(frame, sigma, mode="nearest", truncate=4.0)` of each frame
    of a stack (N,H,W), in float32, with OpenCV (equal to scipy's within float32 rounding)."""
    x = np.asarray(images, dtype=np.float32)
    radius = int(4.0 * float(sigma) + 0.5)
    if sigma <= 0 or radius == 0:
        return x.copy()
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / float(sigma)) ** 2)
    kernel /= kernel.sum()
    out = np.empty(x.shape, dtype=np.float32)
    for i, frame in enumerate(x):
        out[i] = cv2.sepFilter2D(frame, -1, kernel, kernel, borderType=cv2.BORDER_REPLICATE)
    return out


@functools.lru_cache(maxsize=32)
def _knots(m: int) -> np.ndarray:
    """FITPACK's knots of an interpolating quadratic spline on the points 0..m-1 (s=0, even
    degree: interior knots half-way between data points, end knots repeated 3 times)."""
    return np.r_[np.zeros(3), np.arange(1, m - 2) + 0.5, np.full(3, m - 1.0)]


@functools.lru_cache(maxsize=32)
def _collocation_inverse(m: int) -> np.ndarray:
    """Inverse of the (tridiagonal) collocation matrix of `_knots(m)` at 0..m-1: one matrix
    product per axis for a whole stack is faster than banded solves with thousands of columns."""
    return np.linalg.inv(BSpline.design_matrix(np.arange(m, dtype=np.float64), _knots(m), 2).toarray())


def _basis(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 3 quadratic B-splines on knots `t` that are nonzero at each `x`: index of the first
    (P,), their values (P, 3) and first derivatives (P, 3). Cox-de Boor recursion and its
    derivative (Piegl & Tiller, *The NURBS Book*, algorithms A2.2 and A2.3), vectorised over
    the points; `x` within [t[0], t[-1]]. Same numbers as `BSpline.design_matrix` (the tests'
    oracle), at a tenth of its cost on a few thousand points."""
    n_coef = len(t) - 3
    span = np.clip(np.searchsorted(t, x, side="right") - 1, 2, n_coef - 1)
    left1, left2 = x - t[span], x - t[span - 1]
    right1, right2 = t[span + 1] - x, t[span + 2] - x
    # degree 1: functions span-1, span
    n1_0 = right1 / (right1 + left1)
    n1_1 = left1 / (right1 + left1)
    # degree 2: functions span-2, span-1, span
    d0 = right1 + left2  # t[span+1] - t[span-1]
    d1 = right2 + left1  # t[span+2] - t[span]
    tmp0, tmp1 = n1_0 / d0, n1_1 / d1
    values = np.stack([right1 * tmp0, left2 * tmp0 + right2 * tmp1, left1 * tmp1], axis=1)
    derivs = 2 * np.stack([-tmp0, tmp0 - tmp1, tmp1], axis=1)
    return span - 2, values, derivs


class EdgeSpline:
    """The interpolating quadratic spline of each frame of a stack (N,H,W) on its pixel grid,
    i.e. `RectBivariateSpline(arange, arange, frame, kx=2, ky=2, s=0)`, for its gradient."""

    def __init__(self, images: np.ndarray):
        z = np.asarray(images, dtype=np.float64)
        n, h, w = z.shape
        if h < 3 or w < 3:
            raise ValueError(f"a quadratic spline needs frames of at least 3 x 3 pixels, got {h} x {w}")
        self.shape = (h, w)
        c = np.matmul(_collocation_inverse(h), z)  # along rows, every frame
        c = np.matmul(c.reshape(n * h, w), _collocation_inverse(w).T).reshape(n, h, w)  # along columns
        self.coef = c  # (N, H, W)
        self._flat = c.ravel()
        self._offsets = np.arange(3)[:, None] * w + np.arange(3)

    def gradient(self, frames: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(d/d row, d/d col) (P, 2) of frame `frames[p]`'s spline at `points[p]` (rows, cols),
        points outside the grid clamped to its edge (as FITPACK evaluates)."""
        h, w = self.shape
        r0, vr, dr = _basis(np.clip(points[:, 0], 0, h - 1), _knots(h))
        c0, vc, dc = _basis(np.clip(points[:, 1], 0, w - 1), _knots(w))
        corner = (frames * h + r0) * w + c0
        block = self._flat[corner[:, None, None] + self._offsets]  # (P, 3, 3): rows x cols around the point
        out = np.empty((len(points), 2))
        out[:, 0] = np.einsum("pa,pa->p", np.einsum("pab,pb->pa", block, vc), dr)
        out[:, 1] = np.einsum("pa,pa->p", np.einsum("pab,pb->pa", block, dc), vr)
        return out


def _interleave(lengths: np.ndarray) -> np.ndarray:
    """Global point order (0, n-1, 1, n-2, ...) of each snake, snakes one after the other."""
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    snake = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(int(lengths.sum())) - starts[snake]  # position in the interleaved order
    n = lengths[snake]
    local = np.where(pos % 2 == 0, pos // 2, n - 1 - pos // 2)
    return starts[snake] + local


def _internal_band(lengths: np.ndarray, alpha: float, beta: float, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """A + gamma I of every snake, as one symmetric band (2*4+1, P) in the interleaved order
    (`solve_banded` storage), and that order. Stencils of short snakes wrap and add up, as
    skimage's np.roll construction does."""
    order = _interleave(lengths)
    total = len(order)
    where = np.empty(total, dtype=np.int64)
    where[order] = np.arange(total)  # interleaved position of each original point
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    snake = np.repeat(np.arange(len(lengths)), lengths)
    local = np.arange(total) - starts[snake]
    n = lengths[snake]
    stencil = {0: gamma + 2 * alpha + 6 * beta, 1: -alpha - 4 * beta, -1: -alpha - 4 * beta, 2: beta, -2: beta}
    u = _HALF_BAND
    band = np.zeros((2 * u + 1, total))
    for d, v in stencil.items():
        i = where[starts[snake] + local]
        j = where[starts[snake] + (local + d) % n]
        if np.any(np.abs(i - j) > u):  # cannot happen for the interleaved order
            raise AssertionError("interleaved snake matrix is not within its band")
        np.add.at(band, (u + i - j, j), v)
    return band, order


class _BandSolver:
    """Solves (A + gamma I) x = b for all snakes; banded Cholesky once, LU if not positive definite."""

    def __init__(self, lengths: np.ndarray, alpha: float, beta: float, gamma: float):
        self.band, self.order = _internal_band(lengths, alpha, beta, gamma)
        try:
            self.chol = linalg.cholesky_banded(self.band[: _HALF_BAND + 1], lower=False)
        except linalg.LinAlgError:
            self.chol = None

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        b = rhs[self.order]
        if self.chol is not None:
            x = linalg.cho_solve_banded((self.chol, False), b, check_finite=False)
        else:
            x = linalg.solve_banded((_HALF_BAND, _HALF_BAND), self.band, b, check_finite=False)
        out = np.empty_like(x)
        out[self.order] = x
        return out


def active_contours(
    images: np.ndarray,
    snakes: list[np.ndarray],
    frames: np.ndarray | None = None,
    *,
    alpha: float = 0.01,
    beta: float = 0.1,
    w_edge: float = 1.0,
    gamma: float = 0.01,
    max_px_move: float = 1.0,
    max_num_iter: int = 2500,
    convergence: float = 0.1,
) -> list[np.ndarray]:
    """Fit closed snakes (each (n_i, 2) rows, cols) to the edges of their frames `images[frames[i]]`
    (N,H,W), all at once; returns the fitted snakes, each with its own length. Same parameters
    and result as skimage's `active_contour(image, snake, ..., w_line=0,
    boundary_condition="periodic")` called on each snake alone."""
    max_num_iter = int(max_num_iter)
    if max_num_iter <= 0:
        raise ValueError("max_num_iter should be > 0")
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    frames = np.zeros(len(snakes), dtype=np.int64) if frames is None else np.asarray(frames, dtype=np.int64)
    if len(frames) != len(snakes):
        raise ValueError(f"{len(snakes)} snakes but {len(frames)} frames")
    if not snakes:
        return []
    lengths = np.array([len(s) for s in snakes], dtype=np.int64)
    if lengths.min() < 1:
        raise ValueError("a snake needs at least one point")
    used, frame_of = np.unique(frames, return_inverse=True)
    spline = EdgeSpline(w_edge * sobel_magnitude(images[used]))
    pts = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in snakes])  # (P, 2) rows, cols
    snake_of = np.repeat(np.arange(len(snakes)), lengths)
    frame_pt = frame_of[snake_of]
    solver = _BandSolver(lengths, alpha, beta, gamma)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    active = np.ones(len(snakes), dtype=bool)
    saved = np.empty((_CONVERGENCE_ORDER, *pts.shape))
    for i in range(max_num_iter):
        step = max_px_move * np.tanh(solver.solve(gamma * pts + spline.gradient(frame_pt, pts)) - pts)
        if not active.all():
            step[~active[snake_of]] = 0.0
        pts += step
        j = i % (_CONVERGENCE_ORDER + 1)
        if j < _CONVERGENCE_ORDER:
            saved[j] = pts
        else:
            moved = np.abs(saved - pts).sum(2)  # (10, P): |dx| + |dy| against each saved state
            dist = np.maximum.reduceat(moved, starts, axis=1).min(0)
            active &= ~(dist < convergence)
            if not active.any():
                break
    return np.split(pts, starts[1:])


def fill_polygons(polygons: list[np.ndarray], frames: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """`skimage.draw.polygon` of every polygon ((n_i, 2) rows, cols) into frame `frames[i]` of a
    bool stack of `shape`, all at once (union per frame). As in skimage, a pixel is inside when
    an odd number of edges cross its row to its right (PNPOLY) or when it lies on an edge or a
    vertex; filled as row spans."""
    out_n, h, w = shape
    if not polygons:
        return np.zeros(shape, dtype=bool)
    frames = np.asarray(frames, dtype=np.int64)
    lengths = np.array([len(p) for p in polygons], dtype=np.int64)
    pts = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons])
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    poly = np.repeat(np.arange(len(polygons)), lengths)
    prev = np.arange(len(pts)) - 1
    prev[starts] = starts + lengths - 1  # each vertex i pairs with the one before it, j (cyclic)
    yi, xi = pts[:, 0], pts[:, 1]
    yj, xj = yi[prev], xi[prev]
    lo, hi = np.ceil(np.minimum(yi, yj)), np.ceil(np.maximum(yi, yj))  # integer rows in [min, max)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, h)
    count = np.maximum(hi - lo, 0).astype(np.int64)
    edge = np.repeat(np.arange(len(pts)), count)
    row = lo[edge] + (np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count))
    e_yi, e_xi = yi[edge], xi[edge]
    cross = (xj[edge] - e_xi) * (row - e_yi) / (yj[edge] - e_yi) + e_xi
    key = poly[edge] * h + row.astype(np.int64)
    order = np.lexsort((cross, key))
    key, cross = key[order], cross[order]
    first, second = cross[0::2], cross[1::2]  # crossings pair up within each (polygon, row)
    span_key = key[0::2]
    begin = np.clip(np.ceil(first), 0, w).astype(np.int64)
    end = np.clip(np.floor(second) + 1, 0, w).astype(np.int64)  # a pixel on the right edge is in
    frame = frames[span_key // h]
    base = (frame * h + span_key % h) * (w + 1)
    n_bins = out_n * h * (w + 1)
    diff = np.bincount(base + begin, minlength=n_bins) - np.bincount(base + end, minlength=n_bins)
    out = np.cumsum(diff.reshape(out_n, h, w + 1), axis=2)[..., :w] > 0
    # pixels on a horizontal edge or on a vertex (no crossing counts them)
    flat = (yi == yj) & (yi == np.round(yi)) & (yi >= 0) & (yi < h)
    for v in np.flatnonzero(flat):
        a, b = sorted((xi[v], xj[v]))
        out[frames[poly[v]], int(yi[v]), max(0, int(np.ceil(a))) : min(w, int(np.floor(b)) + 1)] = True
    on_grid = (yi == np.round(yi)) & (xi == np.round(xi)) & (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    out[frames[poly[on_grid]], yi[on_grid].astype(np.int64), xi[on_grid].astype(np.int64)] = True
    return out


def boundary_cycles(mask: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The outer boundary of every 4-connected component of every frame of a bool stack (N,H,W),
    as the closed polygon through the midpoints of its pixel cracks (rows, cols), in boundary
    order: the same points, in the same cyclic order (up to start and direction), as
    `skimage.measure.find_contours(np.pad(component, 1), 0.5)` gives on the component alone.
    Returns the polygons (at least 4 points each), the frame of each, and one pixel of each
    component (flat index into `mask`).

    Every side of a mask pixel that faces background is a crack, directed counter-clockwise
    around its pixel; a crack's successor is the next side of the same pixel if that is a crack
    (at a corner where two pixels touch only diagonally this keeps them apart, as marching
    squares does for values above the level), else the same side of the next pixel straight
    on, else the previous side of the pixel diagonally ahead. The cracks form disjoint cycles,
    ordered in one depth-first pass (scipy.sparse.csgraph) from a root joined to one crack per
    cycle; the outer boundary of a component is its cycle of positive signed area (holes run
    the other way)."""
    m = np.pad(np.asarray(mask, dtype=bool), ((0, 0), (1, 1), (1, 1)))
    n, hp, wp = m.shape
    n_pix = m.size
    inner = m[:, 1:-1, 1:-1]
    # sides of a pixel in counter-clockwise order as seen with rows down: left, bottom, right, top;
    # a side is a crack when the pixel is in the mask and its neighbour there is not
    neighbour = (m[:, 1:-1, :-2], m[:, 2:, 1:-1], m[:, 1:-1, 2:], m[:, :-2, 1:-1])
    offsets = np.array([[0.0, -0.5], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0]])  # crack midpoint from the pixel centre
    ahead = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])  # travel direction along each side
    outward = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]])  # towards the neighbour across each side
    crack = np.zeros(m.shape, dtype=bool)
    keys = []
    for s, nb in enumerate(neighbour):
        np.logical_and(inner, ~nb, out=crack[:, 1:-1, 1:-1])
        keys.append(s * n_pix + np.flatnonzero(crack))
    key = np.concatenate(keys)  # sorted: by side, then by pixel
    total = len(key)
    if total == 0:
        return [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    side, flat = np.divmod(key, n_pix)

    def find(q: np.ndarray) -> np.ndarray:
        i = np.minimum(np.searchsorted(key, q), total - 1)
        return np.where(key[i] == q, i, -1)

    step = ahead[:, 0] * wp + ahead[:, 1]
    out_step = outward[:, 0] * wp + outward[:, 1]
    convex = find(((side + 1) % 4) * n_pix + flat)  # next side of the same pixel
    straight = find(key + step[side])  # same side of the pixel ahead
    concave = find(((side + 3) % 4) * n_pix + flat + step[side] + out_step[side])  # pixel diagonally ahead
    succ = np.where(convex >= 0, convex, np.where(straight >= 0, straight, concave))
    if np.any(succ < 0):  # cannot happen on a zero-padded mask
        raise AssertionError("open crack chain")
    graph = csr_matrix((np.ones(total), (np.arange(total), succ)), shape=(total, total))
    _, cycle = connected_components(graph, directed=True, connection="weak")
    _, first = np.unique(cycle, return_index=True)
    root = total
    graph = csr_matrix(
        (np.ones(total + len(first)), (np.r_[np.arange(total), np.full(len(first), root)], np.r_[succ, first])),
        shape=(total + 1, total + 1),
    )
    order = depth_first_order(graph, root, directed=True, return_predecessors=False)[1:]
    cyc = cycle[order]
    bounds = np.flatnonzero(np.r_[True, cyc[1:] != cyc[:-1], True])
    heads = bounds[:-1]
    frame, rem = np.divmod(flat[order], hp * wp)
    row, col = np.divmod(rem, wp)
    pts = np.stack([row - 1.0, col - 1.0], axis=1) + offsets[side[order]]
    y, x = pts[:, 0], pts[:, 1]
    following = np.arange(1, total + 1)
    following[bounds[1:] - 1] = heads  # each point's successor within its cycle
    area = 0.5 * np.add.reduceat(x * y[following] - y * x[following], heads)
    keep = np.flatnonzero(area < 0)
    polygons = [pts[bounds[i] : bounds[i + 1]] for i in keep]
    keep_frame = frame[heads[keep]]
    pixel = (keep_frame * (hp - 2) + row[heads[keep]] - 1) * (wp - 2) + col[heads[keep]] - 1
    return polygons, keep_frame, pixel
