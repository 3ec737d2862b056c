"""The batched Kass snake against skimage (active_contour, sobel, draw.polygon, find_contours)
and scipy (RectBivariateSpline, BSpline, gaussian_filter) as oracles, piece by piece."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.interpolate import BSpline, RectBivariateSpline
from skimage import draw, filters, measure
from skimage.segmentation import active_contour

from alan.downstream import snake as sn

PLANE4 = np.zeros((3, 3, 3), dtype=bool)
PLANE4[1] = ndimage.generate_binary_structure(2, 1)


def blobs(n: int, size: int, low: int, threshold: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.zoom(rng.random((n, low, low)), (1, size / low, size / low), order=1) > threshold


def canonical(points: np.ndarray) -> tuple:
    """A closed point sequence up to its start and direction (the snake is invariant to both)."""
    p = np.round(np.asarray(points) * 2).astype(int)
    best = None
    for seq in (p, p[::-1]):
        i = np.lexsort((seq[:, 1], seq[:, 0]))[0]
        key = tuple(map(tuple, np.roll(seq, -i, axis=0)))
        best = key if best is None or key < best else best
    return best


def test_sobel_and_gaussian_match_skimage_and_scipy():
    rng = np.random.default_rng(0)
    stack = rng.random((3, 17, 23)).astype(np.float32)
    sob = sn.sobel_magnitude(stack)
    for f in range(3):
        np.testing.assert_allclose(sob[f], filters.sobel(stack[f].astype(np.float64)), atol=1e-12)
    for sigma in (1.5, 3.0):
        ours = sn.gaussian_stack(stack, sigma)
        ref = ndimage.gaussian_filter(stack, sigma=(0, sigma, sigma), mode="nearest", truncate=4.0)
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("m", [3, 4, 7, 112])
def test_basis_matches_scipy_bspline(m):
    t = sn._knots(m)
    x = np.r_[np.linspace(0, m - 1, 97), t[3:-3], 0.0, m - 1.0]
    start, values, derivs = sn._basis(x, t)
    dense = BSpline.design_matrix(x, t, 2).toarray()
    ours = np.zeros_like(dense)
    ours_d = np.zeros_like(dense)
    for a in range(3):
        ours[np.arange(len(x)), start + a] = values[:, a]
        ours_d[np.arange(len(x)), start + a] = derivs[:, a]
    np.testing.assert_allclose(ours, dense, atol=1e-14)
    ref_d = np.stack([BSpline(t, np.eye(m)[i], 2).derivative()(x) for i in range(m)], axis=1)
    np.testing.assert_allclose(ours_d, ref_d, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 3), (9, 14), (40, 31)])
def test_edge_spline_gradient_matches_rect_bivariate_spline(shape):
    rng = np.random.default_rng(1)
    h, w = shape
    images = rng.random((2, h, w))
    spline = sn.EdgeSpline(images)
    for f in range(2):
        ref = RectBivariateSpline(np.arange(w), np.arange(h), images[f].T, kx=2, ky=2, s=0)
        np.testing.assert_allclose(spline.coef[f].T, ref.get_coeffs().reshape(w, h), atol=1e-9)
        pts = np.stack([rng.uniform(-2, h + 1, 200), rng.uniform(-2, w + 1, 200)], axis=1)  # some outside: clamped
        grad = spline.gradient(np.full(200, f), pts)
        np.testing.assert_allclose(grad[:, 0], ref(pts[:, 1], pts[:, 0], dy=1, grid=False), atol=1e-10)
        np.testing.assert_allclose(grad[:, 1], ref(pts[:, 1], pts[:, 0], dx=1, grid=False), atol=1e-10)
    with pytest.raises(ValueError, match="3 x 3"):
        sn.EdgeSpline(np.zeros((1, 2, 5)))


def skimage_matrix(n: int, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """A + gamma I exactly as skimage's active_contour builds it (np.roll of the identity)."""
    eye = np.eye(n)
    a = np.roll(eye, -1, axis=0) + np.roll(eye, -1, axis=1) - 2 * eye
    b = (np.roll(eye, -2, axis=0) + np.roll(eye, -2, axis=1) - 4 * np.roll(eye, -1, axis=0)
         - 4 * np.roll(eye, -1, axis=1) + 6 * eye)
    return -alpha * a + beta * b + gamma * eye


# the last one is indefinite: LU instead of Cholesky
@pytest.mark.parametrize("params", [(0.01, 0.2, 0.01), (0.5, 0.0, 1.0), (-0.6, 0.01, 0.01)])
def test_band_solver_matches_skimage_dense_inverse(params):
    lengths = np.array([1, 2, 3, 4, 5, 6, 7, 12, 50, 201])
    rng = np.random.default_rng(2)
    rhs = rng.normal(size=(lengths.sum(), 2))
    solver = sn._BandSolver(lengths, *params)
    assert (solver.chol is None) == (params[0] < 0)
    ours = solver.solve(rhs)
    start = 0
    for n in lengths:
        ref = np.linalg.solve(skimage_matrix(n, *params), rhs[start : start + n])
        np.testing.assert_allclose(ours[start : start + n], ref, rtol=1e-9, atol=1e-9)
        start += n


def shapes(size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
    """Frames with many kinds of outlines, and a perturbed start contour for each shape."""
    yy, xx = np.mgrid[:size, :size]
    rng = np.random.default_rng(3)
    frames, inits = [], []
    for i in range(8):
        cy, cx = rng.uniform(20, 44, 2)
        ry, rx = rng.uniform(6, 18, 2)
        ang = np.arctan2(yy - cy, xx - cx)
        wobble = 1 + 0.25 * np.sin((i + 2) * ang)  # ellipses, lobed shapes, ...
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= wobble**2
        if i == 6:
            m = np.roll(m, 30, axis=0)  # cut by the image edge
        if i == 7:
            m = np.zeros_like(m)
            m[30:33, 30:33] = True  # a tiny shape: a short snake
        frames.append(ndimage.gaussian_filter(m.astype(float), 2.0, mode="nearest"))
        c = max(measure.find_contours(np.pad(m, 1).astype(float), 0.5), key=len)[:-1] - 1
        inits.append(c + rng.normal(0, 0.7, c.shape))
    return np.stack(frames), inits


# 250: skimage's convergence test stops snakes at different steps; over that many steps a snake
# that keeps sliding (the shape cut by the image edge) amplifies rounding from 1e-12 to ~1e-5 px
@pytest.mark.parametrize("iters, atol", [(10, 1e-9), (250, 1e-3)])
def test_active_contours_match_skimage_on_many_shapes(iters, atol):
    images, inits = shapes()
    params = dict(alpha=0.01, beta=0.2, gamma=0.01, w_edge=1.0, max_num_iter=iters)
    # several snakes per frame, frames out of order, lengths from 12 to ~200 points
    frames = np.r_[np.arange(8), [3, 0]]
    snakes = inits + [inits[3][::-1] + 1.5, inits[0] * 0.9 + 3]
    ours = sn.active_contours(images, snakes, frames, **params)
    moved = 0.0
    for s, f, out in zip(snakes, frames, ours):
        ref = active_contour(images[f], s, w_line=0.0, boundary_condition="periodic", **params)
        assert out.shape == s.shape
        np.testing.assert_allclose(out, ref, atol=atol)
        moved = max(moved, np.abs(ref - s).max())
    assert moved > 1  # the snakes did move


def test_active_contours_with_other_weights_and_errors():
    images, inits = shapes()
    params = dict(alpha=0.1, beta=0.05, gamma=0.05, w_edge=-0.5, max_px_move=0.5, max_num_iter=20)
    ours = sn.active_contours(images[2], [inits[2]], **params)[0]
    ref = active_contour(images[2], inits[2], w_line=0.0, **params)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert sn.active_contours(images, [], []) == []
    with pytest.raises(ValueError, match="max_num_iter"):
        sn.active_contours(images, inits, np.arange(8), max_num_iter=0)
    with pytest.raises(ValueError, match="frames"):
        sn.active_contours(images, inits, np.arange(3))


def test_boundary_cycles_are_find_contours_outer_contours():
    masks = blobs(12, 48, 6, 0.55, seed=4)  # diagonal touches, holes, islands in holes, edge contact
    masks[2] = False
    masks[5, 10:20, 10:20] = True
    masks[5, 13:17, 13:17] = False  # a hole ...
    masks[5, 14:16, 14:16] = True  # ... with an island in it
    masks[7, 3, 3] = masks[7, 4, 4] = True  # two pixels touching diagonally only
    comp, n_comp = ndimage.label(masks, structure=PLANE4)
    polygons, frames, pixels = sn.boundary_cycles(masks)
    labels = comp.ravel()[pixels]
    assert sorted(labels.tolist()) == list(range(1, n_comp + 1))  # one outer boundary per component
    for poly, f, lab in zip(polygons, frames, labels):
        alone = np.pad(comp[f] == lab, 1).astype(float)
        ref = max(measure.find_contours(alone, 0.5), key=lambda c: abs(_area(c)))[:-1] - 1
        assert canonical(poly) == canonical(ref)
    assert sn.boundary_cycles(np.zeros((2, 5, 5), bool))[0] == []


def _area(c: np.ndarray) -> float:
    y, x = c[:, 0], c[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_fill_polygons_matches_skimage_polygon():
    rng = np.random.default_rng(5)
    polys, frames = [], []
    for i in range(120):
        n = rng.integers(3, 30)
        th = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(2, 22, n)
        p = np.stack([20 + rad * np.sin(th), 20 + rad * np.cos(th)], axis=1) + rng.uniform(-10, 10, 2)
        if i % 3 == 0:
            p = np.round(p * 2) / 2  # vertices and edges through pixel centres
        polys.append(p)
        frames.append(i // 2)  # two polygons per frame: a union
    ours = sn.fill_polygons(polys, frames, (60, 40, 40))
    ref = np.zeros((60, 40, 40), bool)
    for p, f in zip(polys, frames):
        ref[f][draw.polygon(p[:, 0], p[:, 1], shape=(40, 40))] = True
    np.testing.assert_array_equal(ours, ref)
    assert not sn.fill_polygons([], [], (2, 4, 4)).any()
