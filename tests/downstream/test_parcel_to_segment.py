"""ParcelToSegment on constructed parcel maps whose right answer is known, and against plain
per-frame implementations of the same rules (skimage / scipy, one frame at a time)."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage import measure, morphology
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from alan.downstream import ParcelToSegment
from alan.downstream import parcel_to_segment as p2s
from alan.errors import ArtifactError
from alan.metrics import dice

OFF = dict(largest_component=False, enclaves=False, closing=False, snake=False, fill=False)
CROSS = ndimage.generate_binary_structure(2, 1)


def blobby(n: int, size: int = 112, k: int = 64, low: int = 14, seed: int = 0) -> np.ndarray:
    """Random parcel maps made of blobs: argmax of upsampled random low-resolution scores."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, k, low, low)).astype(np.float32)
    up = ndimage.zoom(scores, (1, 1, size / low, size / low), order=1)
    return up.argmax(1)


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


# ---------------------------------------------------------------- plain per-frame oracles
def oracle_stats(parcels, masks, k, overlap=0.75):
    """Identification statistics, frame by frame and class by class."""
    n_present = np.zeros(k, int)
    n_over = np.zeros(k, int)
    for p, m in zip(parcels, masks):
        for c in np.unique(p):
            n_present[c] += 1
            lab = measure.label(p == c, background=0, connectivity=1)
            fracs = [m[lab == r].mean() for r in range(1, lab.max() + 1)]
            n_over[c] += max(fracs) >= overlap
    return n_present, n_over


def oracle_predict(model, parcels):
    """The predict rule without snake, one frame at a time, with a region graph built by loops."""
    interior = set(np.flatnonzero(model.interior_).tolist())
    out = []
    for p in parcels:
        # regions: (class, 4-connected component) pairs
        regions = np.zeros(p.shape, int)
        nxt = 1
        for c in np.unique(p):
            lab, n = ndimage.label(p == c, structure=CROSS)
            regions[lab > 0] = lab[lab > 0] + nxt - 1
            nxt += n
        mask = np.isin(p, list(interior))
        if model.largest_component and mask.any():
            comp, n = ndimage.label(mask, structure=CROSS)
            what = p if model.component_by == "parcels" else regions  # distinct classes, or regions
            best = max(
                range(1, n + 1),
                key=lambda i: (len(np.unique(what[comp == i])), int((comp == i).sum()), -i),
            )
            mask = comp == best
        if model.enclaves:
            bg, n = ndimage.label(~mask, structure=CROSS)
            border = set(np.unique(np.r_[bg[0], bg[-1], bg[:, 0], bg[:, -1]]).tolist())
            for i in range(1, n + 1):
                if i not in border and len(np.unique(regions[bg == i])) <= model.enclave_cutoff:
                    mask = mask | (bg == i)
        if model.closing:
            disk = morphology.disk(model.closing_radius)
            mask = ndimage.binary_erosion(ndimage.binary_dilation(mask, disk), disk, border_value=1)
        if model.fill:
            mask = ndimage.binary_fill_holes(mask)
        out.append(mask)
    return np.array(out)


# ---------------------------------------------------------------- identification (fit)
def test_overlap_rule_is_applied_per_region():
    h, w = 20, 20
    mask = np.zeros((h, w), bool)
    mask[:, :10] = True  # left half is the target
    p = np.zeros((h, w), int)
    p[2, 3:13] = 1  # 10 px, 7 inside: 70% -> not overlapping
    p[5, 2:12] = 2  # 10 px, 8 inside: 80% -> overlapping
    p[8, 7:11] = 3  # 4 px, 3 inside: exactly 75% -> overlapping (>=)
    p[11, 0:4] = 4  # two regions of class 4: one fully inside (4 px) ...
    p[14, 10:20] = 4  # ... one fully outside (10 px): the class overlaps in this frame
    model = ParcelToSegment(**OFF).fit(np.stack([p] * 4), np.stack([mask] * 4))
    assert model.interior_parcels_ == [2, 3, 4]
    assert model.stats_["hit_rate"][1] == 0
    assert model.stats_["mean_overlap"][1] == pytest.approx(0.7)
    assert model.stats_["mean_overlap"][4] == pytest.approx(4 / 14)
    # the threshold really moves the decision (the reference code's test never did)
    assert ParcelToSegment(overlap=0.7).fit(p[None], mask[None]).interior_parcels_ == [1, 2, 3, 4]
    assert ParcelToSegment(overlap=0.81).fit(p[None], mask[None]).interior_parcels_ == [4]


def test_min_region_size_ignores_small_regions():
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    p = np.zeros((10, 10), int)
    p[1, 1:3] = 1  # 2 px, fully inside
    p[2, 5:9] = 2  # 4 px, fully inside
    assert ParcelToSegment().fit(p[None], mask[None]).interior_parcels_ == [1, 2]
    assert ParcelToSegment(min_region_size=3).fit(p[None], mask[None]).interior_parcels_ == [2]


def test_hit_rate_and_presence_thresholds():
    # 10 frames, 20x40; target = top half. Each class is a 2x2 block in its own columns,
    # placed inside (rows 2-3) or outside (rows 15-16) the target, or absent.
    n, h, w = 10, 20, 40
    schedule = {  # class: (frames present, of which inside)
        1: (10, 5),  # hit 0.5 -> interior
        2: (10, 4),  # hit 0.4 -> not
        3: (3, 3),  # presence 0.3, hit 1 -> interior
        4: (2, 2),  # presence 0.2 -> not
        5: (0, 0),  # never present -> not
    }
    parcels = np.zeros((n, h, w), int)
    masks = np.zeros((n, h, w), bool)
    masks[:, :10] = True
    for c, (present, inside) in schedule.items():
        for f in range(present):
            row = 2 if f < inside else 15
            parcels[f, row : row + 2, 4 * c : 4 * c + 2] = c
    assert ParcelToSegment().fit(parcels, masks).n_parcels_ == 5  # max label + 1
    model = ParcelToSegment(n_parcels=6).fit(parcels, masks)
    assert model.interior_parcels_ == [1, 3]
    np.testing.assert_allclose(model.stats_["presence"][1:], [1.0, 1.0, 0.3, 0.2, 0.0])
    np.testing.assert_allclose(model.stats_["hit_rate"][1:], [0.5, 0.4, 1.0, 1.0, 0.0])
    assert ParcelToSegment(hit_rate=0.4).fit(parcels, masks).interior_parcels_ == [1, 2, 3]
    assert ParcelToSegment(presence=0.2).fit(parcels, masks).interior_parcels_ == [1, 3, 4]


def test_fit_statistics_match_per_frame_oracle(monkeypatch):
    monkeypatch.setattr(p2s, "CHUNK", 7)  # several chunks
    parcels = blobby(20, size=48, k=16, low=6, seed=1)
    masks = np.stack([ellipse(48, 48, 24 + i % 3, 22, 14, 10) for i in range(20)])
    model = ParcelToSegment(n_parcels=16).fit(parcels, masks)
    n_present, n_over = oracle_stats(parcels, masks, 16)
    np.testing.assert_array_equal(model.stats_["n_present"], n_present)
    np.testing.assert_array_equal(model.stats_["n_overlapping"], n_over)
    expected = (n_present > 0) & (n_over >= 0.5 * n_present) & (n_present >= 0.3 * 20)
    np.testing.assert_array_equal(model.interior_, expected)
    assert 0 < expected.sum() < 16  # the case is not trivial


# ---------------------------------------------------------------- predict
def fitted(interior, k, **params) -> ParcelToSegment:
    """A model with a given interior set, fitted on a constructed frame for form's sake."""
    model = ParcelToSegment(n_parcels=k, **params)
    p = np.zeros((1, 4, 4), int)
    model.fit(p, np.zeros((1, 4, 4), bool))
    model.interior_ = np.isin(np.arange(k), interior)
    return model


def test_largest_component_counts_interior_parcels_or_regions():
    p = np.zeros((40, 40), int)
    p[2:6, 2:6], p[2:6, 6:10], p[2:6, 10:14] = 1, 2, 1  # blob A: 3 regions of 2 classes, 48 px
    p[20:35, 20:35] = 2  # blob B: 1 region, 225 px
    model = fitted([1, 2], 3, **{**OFF, "largest_component": True})
    out = model.predict(p)
    assert out.sum() == 48 and out[3, 3] and not out[25, 25]
    # the paper's "most interior parcels" counts classes: 3 regions of one class lose to 2 classes
    r = np.zeros((40, 40), int)
    r[2:4, 2:20] = 1
    r[4:6, 2:4], r[4:6, 8:10], r[4:6, 14:16] = 2, 2, 2  # A: class 1 + three regions of class 2 = 4 regions, 2 classes
    r[20:26, 20:23], r[20:26, 23:26], r[20:26, 26:29] = 1, 2, 3  # B: 3 regions, 3 classes, 54 px
    by_parcels = fitted([1, 2, 3], 4, **{**OFF, "largest_component": True}).predict(r)
    by_regions = fitted([1, 2, 3], 4, **{**OFF, "largest_component": True, "component_by": "regions"}).predict(r)
    assert by_parcels[22, 24] and not by_parcels[3, 3]
    assert by_regions[3, 3] and not by_regions[22, 24]
    with pytest.raises(ValueError, match="component_by"):
        fitted([1], 4, component_by="area").predict(r)
    # tie in region count -> the larger area wins
    q = np.zeros((40, 40), int)
    q[2:6, 2:6] = 1
    q[20:30, 20:30] = 1
    np.testing.assert_array_equal(model.predict(q), (q == 1) & (np.arange(40)[:, None] >= 20))
    # switched off: both blobs stay
    assert fitted([1, 2], 3, **OFF).predict(p).sum() == 48 + 225


def ring_with_inside(n_inside: int) -> np.ndarray:
    """Interior class 1 forms a square ring; the hole holds `n_inside` exterior regions."""
    p = np.full((40, 40), 9)
    p[5:35, 5:35] = 1
    hole = np.zeros((20, 20), int)
    cols = np.array_split(np.arange(20), n_inside)
    for i, c in enumerate(cols):
        hole[:, c] = 2 + i % 2  # alternating classes: each stripe is its own region
    p[10:30, 10:30] = hole
    return p


def test_enclaves_fill_holes_of_at_most_cutoff_regions():
    model = fitted([1], 10, **{**OFF, "largest_component": True, "enclaves": True})
    for n_inside, filled in [(1, True), (8, True), (9, False)]:
        out = model.predict(ring_with_inside(n_inside))
        assert out[20, 20] == filled, n_inside
        assert out.sum() == (900 if filled else 900 - 400)
    assert fitted([1], 10, **{**OFF, "enclaves": True, "enclave_cutoff": 9}).predict(ring_with_inside(9))[20, 20]
    assert not fitted([1], 10, **OFF).predict(ring_with_inside(1))[20, 20]  # switched off


def test_enclave_touching_image_edge_is_not_added():
    p = np.full((30, 30), 1)
    p[0:10, 10:20] = 2  # an exterior bay open to the top edge
    out = fitted([1], 3, **{**OFF, "enclaves": True}).predict(p)
    assert not out[0:10, 10:20].any() and out.sum() == 900 - 100


def test_closing_fills_a_thin_gap():
    p = np.zeros((60, 60), int)
    p[10:50, 10:50] = 1
    p[28:31, 10:40] = 0  # a 3-px slit cut in from the left edge of the square
    model = fitted([1], 2, **{**OFF, "closing": True, "closing_radius": 3})
    out = model.predict(p)
    assert out[28:31, 15:40].all()
    assert not fitted([1], 2, **OFF).predict(p)[28:31, 15:40].any()


def test_closing_matches_skimage_disk_closing():
    masks = blobby(6, size=64, k=8, low=8, seed=3) == 0
    for radius in (1, 4, 10):
        ours = p2s.binary_closing_disk(masks, radius)
        for f in range(len(masks)):
            ref = morphology.closing(masks[f], morphology.disk(radius), mode="ignore")
            np.testing.assert_array_equal(ours[f], ref)


def jagged_disk(size=80, r=22, tooth=2, period=8):
    yy, xx = np.mgrid[:size, :size] - size / 2
    rad, ang = np.hypot(yy, xx), np.arctan2(yy, xx)
    teeth = (np.floor(ang / (2 * np.pi) * 2 * np.pi * r / period) % 2) == 0
    return (rad <= r) | ((rad <= r + tooth) & teeth)


def test_snake_smooths_a_jagged_boundary_and_keeps_a_smooth_one():
    model = fitted([1], 2, **{**OFF, "snake": True})
    jag = jagged_disk()
    out = model.predict(jag.astype(int))
    assert measure.perimeter(out) < 0.85 * measure.perimeter(jag)
    smooth = ellipse(80, 80, 40, 40, 22, 16)
    out = model.predict(smooth.astype(int))
    assert dice(out, smooth) > 0.97
    np.testing.assert_array_equal(fitted([1], 2, **OFF).predict(jag.astype(int)), jag)


@pytest.mark.parametrize("method", p2s.SNAKE_METHODS)
def test_snake_is_skimage_active_contour_on_the_smoothed_mask(method):
    from skimage.draw import polygon
    from skimage.filters import gaussian
    from skimage.segmentation import active_contour

    model = fitted([1], 2, **{**OFF, "snake": True, "snake_method": method})
    edge = np.zeros((80, 80), bool)
    edge[:55] = jagged_disk()[25:]  # cut by the top edge of the image
    for mask in (jagged_disk(), edge):
        smooth = gaussian(mask.astype(float), sigma=3, mode="nearest")
        contours = measure.find_contours(np.pad(mask, 1).astype(float), 0.5)
        init = max(contours, key=len)[:-1] - 1
        snake = active_contour(smooth, init, alpha=0.01, beta=0.2, gamma=0.01, w_line=0, w_edge=1, max_num_iter=10)
        ref = np.zeros(mask.shape, bool)
        ref[polygon(snake[:, 0], snake[:, 1], shape=mask.shape)] = True
        ours = model.predict(mask.astype(int))
        assert (ours != ref).sum() <= 2
        assert (ours != mask).sum() > 20  # the snake did move


def test_batched_snake_gives_the_masks_of_skimages_snake(monkeypatch):
    """The default snake (all components of a stack in one system) against the reference
    (skimage's active_contour per component) on blobby maps with several components per frame,
    frames without any, and components cut by the image edge; also across chunks."""
    monkeypatch.setattr(p2s, "CHUNK", 7)
    parcels = blobby(16, size=64, k=12, low=6, seed=6)
    parcels[3] = 11  # a frame without interior parcels
    truth = np.stack([ellipse(64, 64, 30 + i % 5, 32, 20, 14) for i in range(16)])
    fast = fitted([0, 3, 5, 7], 12, closing_radius=3, largest_component=False)
    ref = fast.set_params(snake_method="skimage").predict(parcels)
    ours = fast.set_params(snake_method="batched").predict(parcels)
    assert not ours[3].any()
    assert (ours != ref).sum() <= 0.0005 * ref.size  # rounding may flip a pixel on a polygon edge
    assert abs(dice(ours, truth).mean() - dice(ref, truth).mean()) < 0.005
    closed = fast.set_params(snake=False).predict(parcels)
    assert (ours != closed).sum() > 100  # the snake did move
    n_comp = [ndimage.label(f, structure=CROSS)[1] for f in closed]
    assert max(n_comp) > 1 and any(closed[:, 0].any(1))  # several components, some at the edge
    with pytest.raises(ValueError, match="snake_method"):
        fast.set_params(snake=True, snake_method="fast").predict(parcels)


def test_snake_leaves_frames_too_small_for_its_spline_as_they_are():
    p = np.zeros((2, 2, 6), int)
    p[:, :, 1:4] = 1
    for method in p2s.SNAKE_METHODS:
        out = fitted([1], 2, **{**OFF, "snake": True, "snake_method": method}).predict(p)
        np.testing.assert_array_equal(out, p == 1)


def test_snake_method_is_saved_and_old_files_load_the_default(tmp_path):
    model, parcels = small_fit(snake_method="skimage")
    path = tmp_path / "lv.json"
    model.to_json(path)
    doc = json.loads(path.read_text())
    assert doc["hyperparameters"]["snake_method"] == "skimage"
    assert ParcelToSegment.from_json(path).snake_method == "skimage"
    del doc["hyperparameters"]["snake_method"]  # a file written before the option
    path.write_text(json.dumps(doc))
    loaded = ParcelToSegment.from_json(path)
    assert loaded.snake_method == "batched"
    np.testing.assert_array_equal(loaded.predict(parcels), model.predict(parcels))


def test_fill_and_median_switches():
    p = np.ones((30, 30), int)
    p[10:20, 10:20] = 0  # a hole of one exterior region
    assert fitted([1], 2, **{**OFF, "fill": True}).predict(p).all()
    assert not fitted([1], 2, **OFF).predict(p)[15, 15]
    q = np.zeros((30, 30), int)
    q[5:25, 5:25] = 1
    q[15, 25:29] = 1  # a 1-px spur
    out = fitted([1], 2, **{**OFF, "median_radius": 2}).predict(q)
    assert not out[15, 27] and out[15, 15]


def test_empty_frames_give_empty_masks():
    p = np.zeros((3, 40, 40), int)
    p[1, 10:30, 10:30] = 1
    model = fitted([1], 2)  # every step on, snake included
    out = model.predict(p)
    assert out.shape == (3, 40, 40) and out.dtype == bool
    assert not out[0].any() and not out[2].any() and out[1, 20, 20]
    assert not model.predict(np.zeros((2, 40, 40), int)).any()
    assert not fitted([], 2).predict(p).any()


def test_predict_matches_per_frame_oracle_and_frames_do_not_interact(monkeypatch):
    monkeypatch.setattr(p2s, "CHUNK", 5)
    parcels = blobby(12, size=64, k=12, low=6, seed=2)
    model = fitted([0, 3, 5, 7], 12, snake=False, closing_radius=4)
    np.testing.assert_array_equal(model.predict(parcels), oracle_predict(model, parcels))
    for flags in ({"largest_component": False}, {"component_by": "regions"}, {"enclaves": False}, {"enclave_cutoff": 1},
                  {"closing": False}):
        m = fitted([0, 3, 5, 7], 12, snake=False, closing_radius=4, **flags)
        np.testing.assert_array_equal(m.predict(parcels), oracle_predict(m, parcels), err_msg=str(flags))
    # with the snake, a stack equals its frames one by one
    snaky = fitted([0, 3, 5, 7], 12)
    stack = snaky.predict(parcels[:4])
    for f in range(4):
        np.testing.assert_array_equal(stack[f], snaky.predict(parcels[f]))


def test_input_validation():
    model = ParcelToSegment()
    with pytest.raises(NotFittedError):
        model.predict(np.zeros((1, 4, 4), int))
    with pytest.raises(ValueError, match="n_parcels"):
        ParcelToSegment(n_parcels=2).fit(np.full((1, 4, 4), 3), np.zeros((1, 4, 4), bool))
    with pytest.raises(ValueError, match="shape"):
        model.fit(np.zeros((2, 4, 4), int), np.zeros((2, 4, 5), bool))
    with pytest.raises(ValueError, match="integer"):
        model.fit(np.full((1, 4, 4), 0.5), np.zeros((1, 4, 4), bool))
    model.fit(np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), bool))
    with pytest.raises(ValueError, match="n_parcels"):
        model.predict(np.full((1, 4, 4), 5))
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(ValueError, match="zero frames"):
        ParcelToSegment().fit(np.zeros((0, 4, 4), int), np.zeros((0, 4, 4), bool))
    boolean = np.zeros((4, 4), bool)
    boolean[1:3, 1:3] = True  # a boolean map is read as labels 0/1
    np.testing.assert_array_equal(fitted([1], 2, **OFF).predict(boolean), boolean)


def test_region_oracle_keeps_regions_mostly_inside():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    p = np.zeros((10, 10), int)
    p[0:2, 2:6] = 1  # 8 px, 6 inside: kept
    p[4:6, 3:9] = 2  # 12 px, 4 inside: dropped
    p[8, 0:2] = 2  # a second region of class 2, fully inside: kept
    out = p2s.region_oracle(p, mask)
    # class 0 is one region with 38 of 78 px inside: dropped
    np.testing.assert_array_equal(out, (p == 1) | ((p == 2) & (np.arange(10)[:, None] == 8)))
    assert (out == mask).sum() > (np.isin(p, [1, 2]) == mask).sum()  # the most pixels right


def test_class_set_oracle_matches_brute_force_and_dice():
    from itertools import combinations

    rng = np.random.default_rng(3)
    p = blobby(6, size=32, k=6, low=3, seed=5)
    masks = np.stack([ellipse(32, 32, 16, 16, 9, 6)] * 6) & (rng.random((6, 32, 32)) > 0.1)
    classes, score = p2s.class_set_oracle(p, masks)
    assert score == pytest.approx(dice(np.isin(p, classes), masks).mean())
    best = max(dice(np.isin(p, list(c)), masks).mean() for r in range(1, 7) for c in combinations(range(6), r))
    assert score <= best + 1e-12 and score >= 0.9 * best  # greedy: never above the optimum, close to it here
    # class 1 is the target in frame 0 but background in frame 1: no class set is perfect
    q = np.zeros((2, 4, 4), int)
    q[:, :2] = 1
    t = np.zeros((2, 4, 4), bool)
    t[0, :2] = True
    t[1, 2:] = True
    q[1, 2:] = 2
    assert p2s.class_set_oracle(q, t) == ([1, 2], pytest.approx(5 / 6))


def test_fit_keeps_the_best_class_set_and_with_interior_swaps_only_the_set():
    parcels = blobby(8, size=48, k=10, low=6, seed=4)
    masks = np.stack([ellipse(48, 48, 24, 24, 14, 10)] * 8)
    model = ParcelToSegment(n_parcels=10).fit(parcels, masks)
    assert model.best_class_set_ == p2s.class_set_oracle(parcels, masks)[0]
    alt = model.with_interior(model.best_class_set_)
    assert alt.interior_parcels_ == model.best_class_set_ and alt.get_params() == model.get_params()
    assert model.interior_parcels_ == [int(i) for i in np.flatnonzero(model.stats_["identified"])]  # untouched
    plain = ParcelToSegment(n_parcels=10, **OFF).fit(parcels, masks).with_interior(model.best_class_set_)
    np.testing.assert_array_equal(plain.predict(parcels), np.isin(parcels, model.best_class_set_))


# ---------------------------------------------------------------- JSON and provenance
def small_fit(**params):
    parcels = blobby(8, size=48, k=10, low=6, seed=4)
    masks = np.stack([ellipse(48, 48, 24, 24, 14, 10)] * 8)
    prov = {"backbone_hash": "b0b0", "head_hash": "h1h1"}
    return ParcelToSegment(n_parcels=10, **params).fit(parcels, masks, provenance=prov), parcels


def test_json_round_trip(tmp_path):
    model, parcels = small_fit(closing_radius=4, snake=False)
    path = tmp_path / "lv.json"
    model.to_json(path)
    doc = json.loads(path.read_text())
    assert doc["interior_parcels"] == model.interior_parcels_
    assert doc["hyperparameters"]["closing_radius"] == 4 and doc["target"] == "LV"
    assert doc["provenance"] == {"backbone_hash": "b0b0", "head_hash": "h1h1"}
    loaded = ParcelToSegment.from_json(path)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.interior_, model.interior_)
    for key in ("presence", "hit_rate", "n_present", "n_overlapping", "identified"):
        np.testing.assert_allclose(loaded.stats_[key], model.stats_[key], atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(parcels), model.predict(parcels))
    assert loaded.hand_edited_ == []
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left behind
    # a file from before `component_by` existed keeps the rule it was written with
    del doc["hyperparameters"]["component_by"]
    path.write_text(json.dumps(doc))
    assert model.component_by == "parcels" and ParcelToSegment.from_json(path).component_by == "regions"


def test_hand_edited_interior_list_is_used(tmp_path):
    model, parcels = small_fit(snake=False, closing=False, largest_component=False, enclaves=False, fill=False)
    path = tmp_path / "lv.json"
    model.to_json(path)
    doc = json.loads(path.read_text())
    doc["interior_parcels"] = [2, 7]
    path.write_text(json.dumps(doc))
    loaded = ParcelToSegment.from_json(path)
    assert loaded.interior_parcels_ == [2, 7]
    np.testing.assert_array_equal(loaded.predict(parcels), np.isin(parcels, [2, 7]))
    assert set(loaded.hand_edited_) == set(model.interior_parcels_) ^ {2, 7}
    doc["interior_parcels"] = [12]
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="outside"):
        ParcelToSegment.from_json(path)
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="invalid JSON"):
        ParcelToSegment.from_json(path)


def test_provenance_refusal(tmp_path):
    model, _ = small_fit(snake=False)
    model.check_provenance({"backbone_hash": "b0b0", "head_hash": "h1h1"})
    model.check_provenance({"backbone_hash": "b0b0"})  # unknown keys are not compared
    with pytest.raises(ArtifactError, match="head_hash h1h1, not ffff") as err:
        model.check_provenance({"backbone_hash": "b0b0", "head_hash": "ffff"})
    assert "\n" not in str(err.value)
    path = tmp_path / "lv.json"
    model.to_json(path)
    with pytest.raises(ArtifactError, match=re.escape(str(path))):
        ParcelToSegment.from_json(path).check_provenance({"backbone_hash": "other"})


def test_location_prior_keeps_the_component_where_the_target_usually_is(tmp_path):
    """Two interior components per frame: 'parcels' keeps the one with more classes, 'prior' the
    one that lies where the fitting masks were (their mean on a coarse grid), and the prior
    round-trips through the JSON file."""
    from alan.downstream.parcel_to_segment import location_prior

    n, size = 6, 32
    parcels = np.zeros((n, size, size), np.int64)
    masks = np.zeros((n, size, size), bool)
    parcels[:, 4:14, 4:14] = 1  # the target, top-left, one class
    masks[:, 4:14, 4:14] = True
    parcels[:, 18:30, 18:24] = 1  # a look-alike of the same class bottom-right ...
    parcels[:, 18:30, 24:30] = 2  # ... with a second interior class beside it
    masks_fit = masks.copy()
    masks_fit[:, 18:30, 24:30] = True  # class 2 is interior too (overlaps the truth in fitting)
    common = dict(n_parcels=3, enclaves=False, closing=False, snake=False, fill=False, hit_rate=0.5, overlap=0.5)
    by_classes = ParcelToSegment(component_by="parcels", **common).fit(parcels, masks_fit)
    by_prior = ParcelToSegment(component_by="prior", prior_size=8, **common).fit(parcels, masks)
    assert set(by_classes.interior_parcels_) >= {1, 2}
    by_prior.interior_ = by_classes.interior_.copy()  # same K booleans, only the component choice differs
    kept_classes = by_classes.predict(parcels)
    kept_prior = by_prior.predict(parcels)
    assert kept_classes[:, 20, 26].all() and not kept_classes[:, 8, 8].any()
    assert np.array_equal(kept_prior, masks)
    # the prior is the masks' mean on the coarse grid (area average), as a direct computation says
    direct = masks.mean(0).reshape(8, 4, 8, 4).mean((1, 3))
    assert np.allclose(location_prior(masks, 8), direct, atol=1e-6)
    path = tmp_path / "lv.json"
    by_prior.set_params()  # fitted attributes untouched
    by_prior.provenance_ = {"backbone_hash": "b", "head_hash": "h"}
    by_prior.to_json(path)
    back = ParcelToSegment.from_json(path)
    assert back.component_by == "prior" and np.allclose(back.prior_, by_prior.prior_, atol=1e-3)
    assert np.array_equal(back.predict(parcels), kept_prior)


def test_location_prior_json_is_validated(tmp_path):
    import json

    from alan.errors import ArtifactError

    parcels = np.zeros((2, 8, 8), np.int64)
    parcels[:, 2:6, 2:6] = 1
    model = ParcelToSegment(component_by="prior", prior_size=4, n_parcels=2).fit(parcels, parcels == 1,
                                                                                 provenance={"backbone_hash": "b",
                                                                                             "head_hash": "h"})
    doc = model.to_dict()
    for bad, why in [({**doc, "location_prior": [[0.5] * 4] * 3}, "square"),
                     ({**doc, "location_prior": [[2.0] * 4] * 4}, "in \\[0, 1\\]"),
                     ({k: v for k, v in doc.items() if k != "location_prior"}, "missing")]:
        (tmp_path / "m.json").write_text(json.dumps(bad))
        with pytest.raises(ArtifactError, match=why):
            ParcelToSegment.from_json(tmp_path / "m.json")


def test_to_json_replaces_only_an_earlier_model(tmp_path):
    from alan.errors import ArtifactError

    parcels = np.zeros((2, 8, 8), np.int64)
    parcels[:, 2:6, 2:6] = 1
    model = ParcelToSegment(n_parcels=2).fit(parcels, parcels == 1, provenance={"backbone_hash": "b", "head_hash": "h"})
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    with pytest.raises(ArtifactError, match="not a parcel-to-segment model"):
        model.to_json(notes)
    assert notes.read_text() == '{"mine": 1}'
    with pytest.raises(ArtifactError, match="is a folder"):
        model.to_json(tmp_path)
    model.to_json(tmp_path / "lv.json")
    model.to_json(tmp_path / "lv.json")  # an earlier model is replaced
    assert ParcelToSegment.from_json(tmp_path / "lv.json").interior_parcels_ == model.interior_parcels_


def test_from_interior_builds_the_model_of_given_k_booleans(tmp_path):
    """A model from K booleans (an expert's choice) predicts like a fitted model given the same
    booleans, round-trips through JSON, and refuses what is not K booleans."""
    fitted, parcels = small_fit(snake=False)
    chosen = np.zeros(fitted.n_parcels_, dtype=bool)
    chosen[[2, 5, 7]] = True
    given = ParcelToSegment.from_interior(chosen, {"backbone_hash": "b0b0", "head_hash": "h1h1"},
                                          **{**fitted.get_params(), "n_parcels": None})
    assert given.n_parcels_ == fitted.n_parcels_ and given.stats_["n_images"] == 0
    np.testing.assert_array_equal(given.predict(parcels), fitted.with_interior([2, 5, 7]).predict(parcels))
    given.to_json(tmp_path / "lv.json")
    back = ParcelToSegment.from_json(tmp_path / "lv.json")
    assert back.interior_parcels_ == [2, 5, 7] and back.get_params() == given.get_params()
    with pytest.raises(ValueError, match="K booleans"):
        ParcelToSegment.from_interior([2, 5, 7], {})
    with pytest.raises(ValueError, match="location prior"):
        ParcelToSegment.from_interior(chosen, {}, component_by="prior")


def test_prior_support_cuts_the_target_to_where_the_fitting_masks_lay(tmp_path):
    """An interior class spreads from the target into a place no fitting mask reached: with
    `prior_support` the predicted mask stops where the location prior (the masks' mean on the
    coarse grid, upsampled bilinearly) falls below it, exactly as a direct restatement computes,
    the rest of the pipeline follows, and the support round-trips through the JSON file."""
    import cv2

    n, size = 4, 32
    parcels = np.zeros((n, size, size), np.int64)
    parcels[:, 4:28, 4:12] = 1  # one class: the target (top) and a leak below it
    masks = np.zeros((n, size, size), bool)
    masks[:, 4:14, 4:12] = True
    common = dict(n_parcels=2, hit_rate=0.5, overlap=0.3, enclaves=False, closing=False, snake=False, fill=False)
    plain = ParcelToSegment(**common).fit(parcels, masks, provenance={"backbone_hash": "b", "head_hash": "h"})
    cut = ParcelToSegment(prior_support=0.5, prior_size=8, **common).fit(
        parcels, masks, provenance={"backbone_hash": "b", "head_hash": "h"})
    assert plain.interior_parcels_ == cut.interior_parcels_ == [1]
    assert np.array_equal(plain.predict(parcels), parcels == 1)  # the paper's rule keeps the leak
    prior = cv2.resize(masks.mean(0).reshape(8, 4, 8, 4).mean((1, 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_LINEAR)
    want = (parcels == 1) & (prior >= 0.5)[None]
    got = cut.predict(parcels)
    assert np.array_equal(got, want)
    assert dice(got, masks).mean() > dice(plain.predict(parcels), masks).mean() + 0.2
    # the cut happens before the component step: a far piece of the class inside the support but
    # cut off from the target by the support's edge is a component of its own and is dropped
    assert cut.set_params(largest_component=True, component_by="prior").predict(parcels).sum() <= want.sum()
    path = tmp_path / "la.json"
    cut.set_params(largest_component=False).to_json(path)
    back = ParcelToSegment.from_json(path)
    assert back.prior_support == 0.5 and np.array_equal(back.predict(parcels), want)
    # the saved grid is the one predict used: a threshold on it gives the same cut after a round trip
    rng = np.random.default_rng(0)
    noisy = rng.random((40, size, size)) < rng.random((1, size, size))
    fitted = ParcelToSegment(prior_support=0.37, prior_size=16, n_parcels=2).fit(
        noisy.astype(np.int64), noisy, provenance={"backbone_hash": "b", "head_hash": "h"})
    fitted.to_json(tmp_path / "noisy.json")
    again = ParcelToSegment.from_json(tmp_path / "noisy.json")
    assert np.array_equal(again.prior_, fitted.prior_)
    assert np.array_equal(again.predict(noisy.astype(np.int64)), fitted.predict(noisy.astype(np.int64)))
    assert np.array_equal(ParcelToSegment(prior_support=0.0, **common).fit(parcels, masks).predict(parcels),
                          plain.predict(parcels))


def test_prior_support_json_is_validated(tmp_path):
    import json

    from alan.errors import ArtifactError

    parcels = np.zeros((2, 8, 8), np.int64)
    parcels[:, 2:6, 2:6] = 1
    model = ParcelToSegment(prior_support=0.1, prior_size=4, n_parcels=2).fit(
        parcels, parcels == 1, provenance={"backbone_hash": "b", "head_hash": "h"})
    doc = model.to_dict()
    assert doc["hyperparameters"]["component_by"] == "parcels" and "location_prior" in doc
    hyper = doc["hyperparameters"]
    for bad, why in [({k: v for k, v in doc.items() if k != "location_prior"}, "prior_support 0.1 needs"),
                     ({**doc, "hyperparameters": {**hyper, "prior_support": 1.5}}, "prior_support"),
                     ({**doc, "hyperparameters": {**hyper, "prior_support": 0.0}}, "neither")]:
        (tmp_path / "m.json").write_text(json.dumps(bad))
        with pytest.raises(ArtifactError, match=why):
            ParcelToSegment.from_json(tmp_path / "m.json")
    with pytest.raises(ValueError, match="prior_support"):
        ParcelToSegment(prior_support=2.0).fit(parcels, parcels == 1)
    with pytest.raises(ValueError, match="location prior"):
        ParcelToSegment.from_interior(model.interior_, {}, prior_support=0.1)


def test_yields_to_gives_way_to_the_other_targets_own_mask(tmp_path):
    """An LA model whose interior class spans the valve plane into the LV: with ``yields_to=("LV",)``
    `predict_targets` returns the LA's own mask minus the LV model's own mask (a plain set
    difference, whatever the order of the models), the LV's mask is unchanged, `predict` alone
    is the model's own mask, and the setting round-trips through the JSON file."""
    from alan.downstream.parcel_to_segment import predict_targets

    n, size = 3, 32
    parcels = np.zeros((n, size, size), np.int64)
    parcels[:, 2:14, 8:24] = 1  # the LV
    parcels[:, 14:30, 10:22] = 2  # the LA
    parcels[:, 10:14, 12:20] = 3  # a class at the valve plane, inside the LV
    lv_truth = (parcels == 1) | (parcels == 3)
    la_truth = parcels == 2
    prov = {"backbone_hash": "b", "head_hash": "h"}
    common = dict(n_parcels=4, overlap=0.5, enclaves=False, closing=False, snake=False, fill=False)
    lv = ParcelToSegment(target="LV", **common).fit(parcels, lv_truth, provenance=prov)
    assert lv.interior_parcels_ == [1, 3]
    # an LA model that took the valve-plane class as well (as a fit on other frames may)
    la = ParcelToSegment(target="LA", yields_to=("LV",), **common).fit(parcels, la_truth, provenance=prov)
    plain = ParcelToSegment(target="LA", **common).fit(parcels, la_truth, provenance=prov)
    assert la.interior_parcels_ == plain.interior_parcels_ == [2]
    la, plain = la.with_interior([2, 3]), plain.with_interior([2, 3])
    own_lv, own_la = lv.predict(parcels), la.predict(parcels)
    assert np.array_equal(own_la, plain.predict(parcels))  # predict alone: the model's own mask
    assert (own_la & own_lv).any()
    for order in (("LV", "LA"), ("LA", "LV")):
        models = {t: {"LV": lv, "LA": la}[t] for t in order}
        out = predict_targets(models, parcels)
        assert np.array_equal(out["LV"], own_lv)
        assert np.array_equal(out["LA"], own_la & ~own_lv)
    assert dice(out["LA"], la_truth).mean() > dice(own_la, la_truth).mean()
    assert np.array_equal(predict_targets({"LA": plain, "LV": lv}, parcels)["LA"], own_la)  # no yields_to: no change
    with pytest.raises(ValueError, match="yields to LV"):
        predict_targets({"LA": la}, parcels)
    la.to_json(tmp_path / "la.json")
    assert json.loads((tmp_path / "la.json").read_text())["hyperparameters"]["yields_to"] == ["LV"]
    back = ParcelToSegment.from_json(tmp_path / "la.json")
    assert back.yields_to == ("LV",)
    assert np.array_equal(predict_targets({"LV": lv, "LA": back}, parcels)["LA"], own_la & ~own_lv)
    with pytest.raises(ValueError, match="own target"):
        ParcelToSegment(target="LA", yields_to=("LA",)).fit(parcels, la_truth)


def test_yield_limit_hands_the_contested_pixels_to_the_other_target_when_they_are_most_of_the_mask(tmp_path):
    """Frame 0: the LA's mask runs up into the LV (the pixels both claim are a small share of the
    LA's mask): the LA gives them up. Frame 1: the LV's mask runs on into the LA (they are most of
    the LA's mask): the LV gives them up. Checked against the rule restated per frame, in both model
    orders; `yield_limit=1` is plain yielding; the limit round-trips through the JSON file."""
    from alan.downstream.parcel_to_segment import predict_targets

    size = 32
    parcels = np.zeros((2, size, size), np.int64)
    parcels[:, 2:14, 8:24] = 1  # the LV
    parcels[:, 14:30, 10:22] = 2  # the LA
    parcels[0, 11:14, 12:20] = 3  # frame 0: a class at the valve plane, inside the LV
    parcels[1, 14:26, 10:22] = 3  # frame 1: the same class over most of the LA
    prov = {"backbone_hash": "b", "head_hash": "h"}
    off = dict(largest_component=False, enclaves=False, closing=False, snake=False, fill=False)
    lv = ParcelToSegment.from_interior(np.array([0, 1, 0, 1], bool), prov, target="LV", **off)
    own_lv = lv.predict(parcels)
    for limit in (0.6, 1.0):
        la = ParcelToSegment.from_interior(np.array([0, 0, 1, 1], bool), prov, target="LA", yields_to=("LV",),
                                           yield_limit=limit, **off)
        own_la = la.predict(parcels)
        want_lv, want_la = own_lv.copy(), own_la.copy()
        for f in range(2):  # the rule, restated
            both = own_la[f] & own_lv[f]
            if both.sum() / own_la[f].sum() <= limit:
                want_la[f] &= ~both
            else:
                want_lv[f] &= ~both
        for order in (("LV", "LA"), ("LA", "LV")):
            out = predict_targets({t: {"LV": lv, "LA": la}[t] for t in order}, parcels)
            assert np.array_equal(out["LV"], want_lv) and np.array_equal(out["LA"], want_la)
        if limit == 1.0:  # plain yielding: the LA always gives way
            assert np.array_equal(out["LA"], own_la & ~own_lv) and np.array_equal(out["LV"], own_lv)
    below = np.arange(size)[:, None] >= 14  # the valve plane
    truth_lv, truth_la = np.isin(parcels, [1, 3]) & ~below, np.isin(parcels, [2, 3]) & below
    assert np.array_equal(out["LA"][1], own_la[1] & ~own_lv[1])  # limit 1: frame 1's LA loses most of itself
    la.set_params(yield_limit=0.6)
    out = predict_targets({"LV": lv, "LA": la}, parcels)
    assert np.array_equal(out["LV"], truth_lv) and np.array_equal(out["LA"], truth_la)
    la.to_json(tmp_path / "la.json")
    assert json.loads((tmp_path / "la.json").read_text())["hyperparameters"]["yield_limit"] == 0.6
    assert ParcelToSegment.from_json(tmp_path / "la.json").yield_limit == 0.6
    doc = json.loads((tmp_path / "la.json").read_text())
    doc["hyperparameters"]["yield_limit"] = 1.5
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="yield_limit"):
        ParcelToSegment.from_json(tmp_path / "bad.json")
    del doc["hyperparameters"]["yield_limit"]
    (tmp_path / "old.json").write_text(json.dumps(doc))
    assert ParcelToSegment.from_json(tmp_path / "old.json").yield_limit == 1.0  # files from before the option
    with pytest.raises(ValueError, match="yield_limit"):
        ParcelToSegment(target="LA", yields_to=("LV",), yield_limit=-0.1).fit(parcels, truth_la)


def test_bright_cut_splits_the_mask_at_a_bright_line_and_keeps_the_piece_of_the_prior(tmp_path):
    """Two dark pools (LV above, LA below) separated by a one-pixel bright line, and a parcel class
    that covers both: the plain mask holds both pools; with `bright_cut` the level is the median
    inside the fitting masks plus that share of the way to the median of a 3-pixel ring around them
    (restated here), the line leaves the mask, the LV pool (most prior mass) is kept, grown back by
    one pixel; without the frames the model refuses; the level round-trips through the JSON."""
    from scipy import ndimage

    from alan.downstream.parcel_to_segment import predict_targets

    n, size = 4, 40
    rng = np.random.default_rng(0)
    frames = np.full((n, size, size), 150.0) + rng.normal(0, 5, (n, size, size))  # the wall
    parcels = np.zeros((n, size, size), np.int64)
    lv = np.zeros((size, size), bool)
    lv[4:20, 10:30] = True
    la = np.zeros((size, size), bool)
    la[21:34, 12:28] = True
    frames[:, lv | la] = 30.0 + rng.normal(0, 5, (n, int((lv | la).sum())))  # dark blood
    parcels[:, 3:35, 9:31] = 1  # one class spans the LV, the line (row 20) and the LA
    frames[:, 20, 10:30] = 200.0  # the shut valve
    truth = np.broadcast_to(lv, parcels.shape)
    prov = {"backbone_hash": "b", "head_hash": "h"}
    off = dict(n_parcels=2, overlap=0.5, hit_rate=0.5, enclaves=False, closing=False, snake=False, fill=False,
               component_by="prior")
    # the class is taken as interior (as a fit on other frames may take a class that spans the valve)
    plain = ParcelToSegment(target="LV", **off).fit(parcels, truth, provenance=prov).with_interior([1])
    cut = ParcelToSegment(target="LV", bright_cut=0.2, **off).fit(parcels, truth, provenance=prov,
                                                                   frames=frames).with_interior([1])
    ring = np.stack([ndimage.binary_dilation(m, iterations=3) & ~m for m in truth])
    inside, around = np.median(frames[truth]), np.median(frames[ring])
    assert cut.bright_level_ == pytest.approx(inside + 0.2 * (around - inside), abs=1e-3)
    assert plain.predict(parcels).sum() > 1.5 * truth.sum()  # the class spans both pools
    got = cut.predict(parcels, frames)
    want = np.stack([ndimage.binary_fill_holes(ndimage.binary_dilation(
        ndimage.label(m & ~(f > cut.bright_level_))[0] == 1) & m) for m, f in zip(plain.predict(parcels), frames)])
    np.testing.assert_array_equal(got, want)  # the top piece is the LV's: the most prior mass
    assert dice(got, truth).mean() > 0.85 > 0.7 > dice(plain.predict(parcels), truth).mean()
    np.testing.assert_array_equal(predict_targets({"LV": cut}, parcels, frames)["LV"], got)
    with pytest.raises(ValueError, match="needs the frames"):
        cut.predict(parcels)
    with pytest.raises(ValueError, match="needs the frames"):
        ParcelToSegment(target="LV", bright_cut=0.2, **off).fit(parcels, truth)
    with pytest.raises(ValueError, match="frames have shape"):
        cut.predict(parcels, frames[:, :-1])
    cut.to_json(tmp_path / "lv.json")
    doc = json.loads((tmp_path / "lv.json").read_text())
    assert doc["hyperparameters"]["bright_cut"] == 0.2 and doc["bright_level"] == cut.bright_level_
    np.testing.assert_array_equal(ParcelToSegment.from_json(tmp_path / "lv.json").predict(parcels, frames), got)
    for bad, why in [({k: v for k, v in doc.items() if k != "bright_level"}, "bright_level is missing"),
                     ({**doc, "bright_level": "x"}, "bright_level must be"),
                     ({**doc, "hyperparameters": {**doc["hyperparameters"], "bright_cut": 1.5}}, "bright_cut")]:
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ArtifactError, match=why):
            ParcelToSegment.from_json(tmp_path / "bad.json")
    plain.to_json(tmp_path / "plain.json")
    assert "bright_level" not in json.loads((tmp_path / "plain.json").read_text())
    assert ParcelToSegment.from_json(tmp_path / "plain.json").bright_cut == 0.0


def test_cut_against_keeps_the_piece_the_other_targets_prior_does_not_claim(tmp_path):
    """An LA model whose mask spans the LV pool (top, larger) and the LA pool (bottom) split by a
    bright line; the LA fitting masks lie at varied depths, so the LA prior puts more mass in the
    LV's pool and the plain cut keeps the wrong piece. With `cut_against=("LV",)` the LV masks'
    prior (their block means on the prior grid, restated here) weighs against it: the piece kept is
    the argmax of sum(prior - w * LV prior) (restated per piece with scipy), the LA pool. Fit,
    JSON and schema refuse what does not fit together."""
    from scipy import ndimage

    n, size, grid = 6, 40, 8
    rng = np.random.default_rng(1)
    lv = np.zeros((size, size), bool)
    lv[2:20, 8:32] = True
    la = np.zeros((size, size), bool)
    la[21:30, 14:26] = True
    frames = np.full((n, size, size), 150.0) + rng.normal(0, 5, (n, size, size))
    frames[:, lv | la] = 30.0
    frames[:, 20, 8:32] = 200.0
    parcels = np.zeros((n, size, size), np.int64)
    parcels[:, 1:31, 7:33] = 1
    la_fit = np.zeros((n, size, size), bool)  # the LA seen at six depths, most of them shallow
    for i, top in enumerate((8, 10, 12, 14, 16, 21)):
        la_fit[i, top:top + 9, 14:26] = True
    lv_fit = np.broadcast_to(lv, (3, size, size))
    prov = {"backbone_hash": "b", "head_hash": "h"}
    off = dict(n_parcels=2, overlap=0.5, hit_rate=0.1, presence=0.1, enclaves=False, closing=False, snake=False,
               fill=False, component_by="prior", prior_size=grid, bright_cut=0.2)
    plain = ParcelToSegment(target="LA", **off).fit(parcels, la_fit, provenance=prov, frames=frames).with_interior([1])
    model = ParcelToSegment(target="LA", cut_against=("LV",), **off).fit(
        parcels, la_fit, provenance=prov, frames=frames, against={"LV": lv_fit}).with_interior([1])
    blocks = lv_fit.reshape(3, grid, size // grid, grid, size // grid).mean(axis=(0, 2, 4))
    np.testing.assert_allclose(model.against_priors_["LV"], blocks, atol=1e-3)
    truth = np.broadcast_to(la, parcels.shape)
    assert dice(plain.predict(parcels, frames), truth).mean() < 0.1  # the LV's pool holds more LA prior
    got = model.predict(parcels, frames)
    field = model.prior_at((size, size)) - 0.5 * cv2.resize(blocks.astype(np.float32), (size, size),
                                                              interpolation=cv2.INTER_LINEAR)
    for whole, f, g in zip(parcels == 1, frames, got):  # the mask before the cut: the one class
        pieces, k = ndimage.label(whole & ~(f > model.bright_level_))
        best = 1 + int(np.argmax(ndimage.sum(field, pieces, np.arange(1, k + 1))))
        np.testing.assert_array_equal(g, ndimage.binary_fill_holes(whole & ndimage.binary_dilation(pieces == best)))
    assert dice(got, truth).mean() > 0.8  # the LA's pool, and the line pixels grown back onto it
    model.to_json(tmp_path / "la.json")
    doc = json.loads((tmp_path / "la.json").read_text())
    assert doc["hyperparameters"]["cut_against"] == ["LV"] and len(doc["against_priors"]["LV"]) == grid
    np.testing.assert_array_equal(ParcelToSegment.from_json(tmp_path / "la.json").predict(parcels, frames), got)
    for bad, why in [({k: v for k, v in doc.items() if k != "against_priors"}, "against_priors holds"),
                     ({**doc, "against_priors": {"LV": [[2.0]]}}, "against_priors.LV"),
                     ({**doc, "hyperparameters": {**doc["hyperparameters"], "cut_against": ["LA"]}}, "own target"),
                     ({**doc, "hyperparameters": {**doc["hyperparameters"], "bright_cut": 0.0}}, "needs bright_cut")]:
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ArtifactError, match=why):
            ParcelToSegment.from_json(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="needs their masks"):
        ParcelToSegment(target="LA", cut_against=("LV",), **off).fit(parcels, la_fit, provenance=prov, frames=frames)
    with pytest.raises(ValueError, match="needs bright_cut"):
        ParcelToSegment(target="LA", cut_against=("LV",), **{**off, "bright_cut": 0.0}).fit(
            parcels, la_fit, provenance=prov, against={"LV": lv_fit})


def test_cut_bright_on_a_stack_equals_the_rule_frame_by_frame():
    """`cut_bright` (all frames at once, on the masks' box) against the rule restated per frame with
    scipy: masks of varied shapes, one empty, one at the image edge with a hole, speckle frames."""
    from scipy import ndimage

    from alan.downstream.parcel_to_segment import cut_bright

    rng = np.random.default_rng(0)
    masks = np.zeros((40, 48, 48), bool)
    for i in range(40):
        masks[i, 8 + i % 7:40, 10:40 - i % 5] = True
    masks[5] = False
    masks[7, 0:20, 0:14] = True
    masks[7, 5:9, 5:9] = False
    frames = rng.normal(40, 30, masks.shape).astype(np.float32)
    frames[:, 24, :] = 200
    frames[::3, 24, 20] = 0  # a gap in the line: no split in those frames
    prior = rng.random((48, 48)).astype(np.float32)
    for level in (60.0, 90.0, 250.0):
        want = masks.copy()
        for i in range(len(masks)):
            pieces, n = ndimage.label(masks[i] & ~(frames[i] > level))
            if n > 1:
                best = 1 + int(np.argmax(ndimage.sum(prior, pieces, np.arange(1, n + 1))))
                want[i] = ndimage.binary_fill_holes(masks[i] & ndimage.binary_dilation(pieces == best))
        np.testing.assert_array_equal(cut_bright(masks, frames, level, prior), want)
        np.testing.assert_array_equal(cut_bright(masks[8:], frames[8:], level, prior), want[8:])


def test_label_planes_equals_scipy_labelling_of_each_plane():
    """OpenCV on the frames stacked with a background row between them against `ndimage.label`
    with a cross confined to the plane: the same labels in the same (raster) order, none across
    frames, also with components touching the top and bottom rows and an empty frame."""
    from alan.downstream.parcel_to_segment import label_planes

    rng = np.random.default_rng(3)
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = ndimage.generate_binary_structure(2, 1)
    for density in (0.3, 0.55, 0.7):
        mask = rng.random((12, 37, 29)) < density
        mask[4] = False
        mask[:, 0, :], mask[:, -1, :] = True, True  # would link frames if stacked without a gap
        labels, n = label_planes(mask)
        want, n_want = ndimage.label(mask, structure=plane)
        assert n == n_want
        np.testing.assert_array_equal(labels, want)


def test_yields_to_json_is_validated(tmp_path):
    parcels = np.zeros((2, 8, 8), np.int64)
    parcels[:, 2:6, 2:6] = 1
    doc = ParcelToSegment(target="LA", yields_to=("LV",), n_parcels=2).fit(
        parcels, parcels == 1, provenance={"backbone_hash": "b", "head_hash": "h"}).to_dict()
    hyper = doc["hyperparameters"]
    for bad, why in [("LV", "list of distinct targets"), (["XX"], "list of distinct targets"),
                     (["LV", "LV"], "list of distinct targets"), (["LA"], "own target")]:
        (tmp_path / "m.json").write_text(json.dumps({**doc, "hyperparameters": {**hyper, "yields_to": bad}}))
        with pytest.raises(ArtifactError, match=why):
            ParcelToSegment.from_json(tmp_path / "m.json")
    old = {**doc, "hyperparameters": {k: v for k, v in hyper.items() if k != "yields_to"}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert ParcelToSegment.from_json(tmp_path / "old.json").yields_to == ()  # files from before the option
