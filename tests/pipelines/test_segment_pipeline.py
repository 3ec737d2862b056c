import math

import numpy as np
import pytest
from skimage.draw import ellipse

from alan.pipelines.analyze import cycle_efs, find_ed_es
from alan.pipelines.segment import (AnnotatedFrames, collect_annotated, ef_errors, mask_ef, masks_to_native,
                                    oracle_dice, to_work)
from alan.records import Record


def _ellipse_mask(a, b, shape=(112, 112)):
    m = np.zeros(shape, bool)
    rr, cc = ellipse(56, 56, a, b, shape=shape)
    m[rr, cc] = True
    return m


def test_mask_ef_is_area_length_formula():
    ed, es = _ellipse_mask(40, 20), _ellipse_mask(34, 14)
    # independent restatement: V = 8 A^2 / (3 pi L), L = major axis of the ellipse fitted by moments
    def vol(m):
        ys, xs = np.nonzero(m)
        cov = np.cov(np.stack([ys, xs]), bias=True)
        L = 4 * math.sqrt(np.linalg.eigvalsh(cov).max())
        return 8 * m.sum() ** 2 / (3 * math.pi * L)

    expected = (vol(ed) - vol(es)) / vol(ed) * 100
    assert mask_ef(ed, es) == pytest.approx(expected, rel=1e-6)
    assert math.isnan(mask_ef(np.zeros((8, 8), bool), es[:8, :8]))


def test_ef_errors_counts_implausible_predictions_and_keeps_the_median():
    ed, es = _ellipse_mask(40, 20), _ellipse_mask(34, 14)
    ef_true = mask_ef(ed, es)
    frames = AnnotatedFrames()
    preds = []
    # record a: prediction = truth; b: ED and ES swapped (EF < 0); c: empty ES prediction (no EF)
    for rid, (p_ed, p_es) in {"a": (ed, es), "b": (es, ed), "c": (ed, np.zeros_like(ed))}.items():
        rec = Record(id=rid, load_frames=lambda: np.zeros((2, 112, 112), np.uint8), meta={"EF": ef_true})
        for phase, truth, pred in (("ED", ed, p_ed), ("ES", es, p_es)):
            frames.record_ids.append(rid); frames.phases.append(phase); frames.images.append(truth)
            frames.masks.append(truth); frames.records.append(rec); preds.append(pred)
    r = ef_errors(frames, preds)
    swapped = abs(mask_ef(es, ed) - ef_true)
    assert r["n"] == 3 and r["n_pred_implausible"] == 2
    assert r["mae_pred_vs_reference"] == pytest.approx(swapped / 2)
    assert r["median_ae_pred_vs_reference"] == pytest.approx(swapped / 2)
    assert r["mae_pred_vs_reference_plausible"] == pytest.approx(0.0, abs=1e-9)
    assert r["mae_truth_masks_vs_reference"] == pytest.approx(0.0, abs=1e-9)


def test_find_ed_es_on_a_known_cycle():
    t = np.arange(90)
    areas = 1000 + 300 * np.cos(2 * np.pi * t / 30)  # maxima at 0, 30, 60; minima at 15, 45, 75
    ed, es = find_ed_es(areas, fps=30)
    assert es == [15, 45, 75]
    assert set(ed) >= {30, 60}
    beats = cycle_efs(np.stack([_ellipse_mask(20 + int(10 * np.cos(2 * np.pi * i / 30)), 15) for i in t]), ed, es)
    assert all(b["es"] > b["ed"] for b in beats) and all(b["ef"] > 0 for b in beats)


def test_find_ed_es_flat_curve_falls_back():
    ed, es = find_ed_es(np.full(10, 5.0))
    assert len(ed) == 1 and len(es) == 1


def test_collect_annotated_uses_ed_es_only_and_any_order():
    frames = np.random.default_rng(0).integers(0, 255, (10, 20, 24), dtype=np.uint8)
    masks = {i: {"LV": np.zeros((20, 24), bool) | (i == 7)} for i in (2, 5, 7)}
    rec = Record("r", load_frames=lambda: frames, n_frames=10, height=20, width=24, load_masks=lambda: masks,
                 annotated=(2, 5, 7), ed=7, es=2)  # ES before ED
    got = collect_annotated([rec], "LV")
    assert got.phases == ["ED", "ES"]
    assert np.array_equal(got.images[0], frames[7]) and np.array_equal(got.images[1], frames[2])
    assert got.masks[0].all() and not got.masks[1].any()
    assert len(collect_annotated([rec], "LA")) == 0


def test_work_resolution_round_trip_and_mr_scaling():
    m = _ellipse_mask(30, 20, (150, 130))
    img = (m * 900 + 100).astype(np.int16)
    work = to_work([img], 112)
    assert work.dtype == np.float32 and work.shape == (1, 112, 112) and 0 <= work.min() and work.max() <= 1
    back = masks_to_native(work > 0.5, [m.shape])[0]
    inter = (back & m).sum()
    assert 2 * inter / (back.sum() + m.sum()) > 0.97


def test_oracle_dice_perfect_when_parcels_align():
    truth = _ellipse_mask(30, 20)[None]
    parcels = np.where(truth, 3, 1).astype(np.int32)
    assert oracle_dice(parcels, truth)[0] == 1.0
    assert oracle_dice(np.ones_like(parcels), truth)[0] == pytest.approx(0.0)


def test_constant_mask_baseline_is_scored_on_the_evaluated_frames():
    """evaluate_segmenter's baseline DICE = DICE of the mean fitting mask (>= 0.5) on each test frame."""
    from alan.downstream.parcel_to_segment import ParcelToSegment
    from alan.metrics import dice
    from alan.pipelines.segment import evaluate_segmenter, fit_baseline, segmentation_report

    rng = np.random.default_rng(0)

    def record(name, a, b, shape=(112, 112)):
        frames = rng.integers(0, 255, (4, *shape), dtype=np.uint8)
        masks = {0: {"LV": _ellipse_mask(a, b, shape)}, 2: {"LV": _ellipse_mask(a - 6, b - 4, shape)}}
        return Record(name, load_frames=lambda: frames, n_frames=4, height=shape[0], width=shape[1],
                      load_masks=lambda: masks, annotated=(0, 2), ed=0, es=2)

    fit_recs = [record(f"f{i}", 30 + 3 * i, 20 + i) for i in range(3)]
    test_recs = [record("t0", 25, 18), record("t1", 38, 26)]

    class Parcellate:  # parcels = the frame's pixel > 127 (any map works: only the baseline is checked)
        work_size = 112
        provenance = {"backbone_hash": "b", "head_hash": "h", "work_size": 112}

        def __call__(self, images):
            return (images > 127).astype(np.int32)

    p = Parcellate()
    baseline = fit_baseline(fit_recs, "LV", 112)
    fit_masks = np.stack([m for r in fit_recs for m in (r.masks[0]["LV"], r.masks[2]["LV"])])
    mean_mask = fit_masks.mean(0) >= 0.5
    assert np.array_equal(baseline.mask_, mean_mask)
    model = ParcelToSegment(target="LV", n_parcels=2).fit(p(np.stack([r.frames[0] for r in fit_recs])),
                                                          fit_masks[::2], provenance=p.provenance)
    res = evaluate_segmenter(model, p, test_recs, baseline=baseline)
    want = [dice(mean_mask, r.masks[i]["LV"]) for r in test_recs for i in (0, 2)]
    assert np.allclose(res.baseline_dice, want)
    report = segmentation_report({"LV": res}, "echonet")
    assert report["baseline"]["LV"]["ED"] == pytest.approx(np.mean(want[::2]))
    assert report["baseline"]["LV"]["ES"] == pytest.approx(np.mean(want[1::2]))


def test_a_parcel_cache_computes_each_frame_once_and_changes_nothing():
    """With a cache shared by the LV and LA fits (and by their evaluations), every annotated frame
    goes through the parcellator once, and models and scores equal those made without it."""
    from alan.downstream.parcel_to_segment import ParcelToSegment
    from alan.pipelines.segment import evaluate_segmenter, fit_segmenter

    rng = np.random.default_rng(1)

    def record(name, a, b):
        frames = rng.integers(0, 255, (4, 112, 112), dtype=np.uint8)
        masks = {i: {"LV": _ellipse_mask(a - i, b), "LA": _ellipse_mask(b, a // 2)} for i in (0, 2)}
        if name == "f2":
            del masks[2]["LA"]  # a frame with the LV only: its parcels are cached for the LA too
        return Record(name, load_frames=lambda: frames, n_frames=4, height=112, width=112,
                      load_masks=lambda: masks, annotated=(0, 2), ed=0, es=2)

    class Parcellate:  # parcels = the frame's pixel > 127; counts the frames it is given
        work_size = 112
        provenance = {"backbone_hash": "b", "head_hash": "h", "work_size": 112}
        head = type("Head", (), {"n_parcels": 2})()
        seen = 0

        def __call__(self, images):
            self.seen += len(images)
            return (np.asarray(images) > 127).astype(np.int32)

    fit_recs = [record(f"f{i}", 30 + 3 * i, 20 + i) for i in range(3)]
    test_recs = [record("t0", 25, 18), record("t1", 38, 26)]
    plain, cached = Parcellate(), Parcellate()
    fit_cache, test_cache = {}, {}
    for target in ("LV", "LA"):
        a = fit_segmenter(plain, fit_recs, target, overlap=0.3)
        b = fit_segmenter(cached, fit_recs, target, overlap=0.3, cache=fit_cache)
        assert a.interior_parcels_ == b.interior_parcels_
        ra = evaluate_segmenter(a, plain, test_recs)
        rb = evaluate_segmenter(b, cached, test_recs, cache=test_cache)
        assert np.array_equal(ra.dice, rb.dice) and np.array_equal(ra.parcels, rb.parcels)
    assert plain.seen == 6 + 5 + 4 + 4  # LV fit 6, LA fit 5, two evaluations of 4 frames
    assert cached.seen == 6 + 4  # each distinct frame once
    assert set(fit_cache) == {(f"f{i}", p) for i in range(3) for p in ("ED", "ES")}
