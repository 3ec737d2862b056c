"""Echo phantom: determinism, anatomy over the cycle, tracings vs masks, views by anatomy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import polygon
from skimage.measure import regionprops

from alan.phantom.echo import VIEWS, EchoPatient, echo_sequence


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _rule_mask(tracing: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """EchoNet's reference rule, restated: polygon of X1[1:] + reversed X2[1:] (and Y), rounded."""
    x1, y1, x2, y2 = tracing.T
    x = np.concatenate([x1[1:], x2[1:][::-1]])
    y = np.concatenate([y1[1:], y2[1:][::-1]])
    rr, cc = polygon(np.rint(y).astype(int), np.rint(x).astype(int), shape)
    m = np.zeros(shape, bool)
    m[rr, cc] = True
    return m


def _simpson(tracing: np.ndarray) -> float:
    """Single-plane method of disks from a tracing: sum pi/4 d_i^2 * L / n (L = first row)."""
    axis, chords = tracing[0], tracing[1:]
    length = np.hypot(axis[2] - axis[0], axis[3] - axis[1])
    d = np.hypot(chords[:, 2] - chords[:, 0], chords[:, 3] - chords[:, 1])
    return float(np.sum(np.pi / 4 * d**2) * length / len(chords))


@pytest.fixture(scope="module")
def apical():
    """A few apical sequences spanning the EF range (30-75%)."""
    out = []
    for i, (view, ef) in enumerate([("A4C", 0.3), ("A4C", 0.75), ("A2C", 0.55), ("A4C", None), ("A2C", 0.7), ("A2C", 0.32)]):
        out.append(echo_sequence(view, 100 + i, n_frames=48, ef=ef))
    return out


def test_same_seed_same_arrays_other_seed_differs():
    a = echo_sequence("A4C", 7, n_frames=20)
    b = echo_sequence("A4C", 7, n_frames=20)
    c = echo_sequence("A4C", 8, n_frames=20)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.tracings.keys() == b.tracings.keys()
    for f in a.tracings:
        np.testing.assert_array_equal(a.tracings[f], b.tracings[f])
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("view", VIEWS)
def test_frames_are_uint8_fans_with_black_corners(view):
    s = echo_sequence(view, 3, n_frames=6)
    assert s.frames.dtype == np.uint8 and s.frames.shape == (6, 112, 112)
    assert s.labels.shape == s.frames.shape
    # Outside the sector (top corners) is black; inside there is speckle.
    assert s.frames[:, :10, :10].max() == 0 and s.frames[:, :10, -10:].max() == 0
    assert s.frames[:, 60:80, 40:70].std() > 10


def test_lv_largest_at_ed_smallest_at_es_la_in_antiphase(apical):
    for s in apical:
        lv = s.mask("LV").sum(axis=(1, 2))
        la = s.mask("LA").sum(axis=(1, 2))
        assert lv[s.ed] == lv.max() and lv[s.es] == lv.min()
        assert lv[s.ed] > 1.15 * lv[s.es]  # EF >= 30%: area ratio <= 0.7^(2/3)
        # LA fills while the LV empties: strongly anti-correlated, largest near LV ES.
        assert np.corrcoef(lv, la)[0, 1] < -0.8
        period = 60.0 / s.meta["patient"].hr * s.fps
        assert abs(int(np.argmax(la)) - s.es) % period <= 0.1 * period or \
            period - abs(int(np.argmax(la)) - s.es) % period <= 0.1 * period
        assert la[s.es] > la[s.ed]


def test_contraction_is_zero_at_ed_one_at_es(apical):
    for s in apical:
        assert s.contraction[s.ed] == pytest.approx(0.0, abs=1e-9)
        assert s.contraction[s.es] == pytest.approx(1.0, abs=1e-9)


def test_tracing_rule_reproduces_phantom_lv(apical):
    for s in apical:
        assert set(s.tracings) == {s.ed, s.es}
        for f, tr in s.tracings.items():
            assert tr.shape == (21, 4)
            assert _dice(_rule_mask(tr, s.frames.shape[1:]), s.mask("LV")[f]) >= 0.95


def test_tracing_geometry_long_axis_then_perpendicular_chords_wall_to_wall(apical):
    for s in apical:
        lv = s.mask("LV")[s.ed]
        dist_out = ndimage.distance_transform_edt(~lv)
        dist_in = ndimage.distance_transform_edt(lv)
        tr = s.tracings[s.ed]
        axis = tr[0, 2:] - tr[0, :2]
        # Apex (X1, Y1) is the top of the LV: nearer the sector apex than the mitral midpoint.
        assert tr[0, 1] < tr[0, 3]
        for x1, y1, x2, y2 in tr[1:]:
            chord = np.array([x2 - x1, y2 - y1])
            assert abs(np.dot(chord, axis)) <= 1e-6 * np.linalg.norm(axis) * max(np.linalg.norm(chord), 1e-9)
            for x, y in ((x1, y1), (x2, y2)):  # both ends lie on the LV boundary (within a pixel)
                r, c = int(round(y)), int(round(x))
                assert dist_out[r, c] <= 1.5 and dist_in[r, c] <= 1.5


def test_ef_and_volumes_follow_method_of_disks(apical):
    for s in apical:
        px3_to_ml = s.spacing_mm**3 / 1000.0
        edv = _simpson(s.tracings[s.ed]) * px3_to_ml
        esv = _simpson(s.tracings[s.es]) * px3_to_ml
        assert s.edv == pytest.approx(edv, rel=1e-9) and s.esv == pytest.approx(esv, rel=1e-9)
        assert s.ef == pytest.approx(100 * (edv - esv) / edv, rel=1e-9)
        target = s.meta["patient"].ef_target
        if s.view == "A4C":  # the contraction is solved on the A4C contour
            assert s.ef == pytest.approx(100 * target, abs=1.0)
        assert 20 < s.ef < 85


@pytest.mark.parametrize("view", VIEWS)
def test_myocardium_surrounds_the_lv(view):
    s = echo_sequence(view, 11, n_frames=12)
    lv, myo = s.mask("LV"), s.mask("MYO")
    ring = ndimage.binary_dilation(lv, structure=np.array([[[0, 0, 0], [0, 1, 0], [0, 0, 0]],
                                                          [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                                                          [[0, 0, 0], [0, 1, 0], [0, 0, 0]]], bool)) & ~lv
    inside = s.labels > 0
    share = (ring & myo).sum() / (ring & inside).sum()
    # PSAX: a closed ring. Apical / PLAX: open only at the valve plane.
    assert share > (0.99 if view == "PSAX" else 0.6)
    assert not np.any(lv & myo)


def test_views_differ_by_anatomy():
    seqs = {v: echo_sequence(v, 21, n_frames=8) for v in VIEWS}
    area = {v: {k: s.mask(k).sum() for k in ("LV", "LA", "MYO", "RV")} for v, s in seqs.items()}
    assert area["A4C"]["RV"] > 0 and area["A2C"]["RV"] == 0
    assert area["PSAX"]["LA"] == 0 and area["PLAX"]["LA"] > 0 and area["PLAX"]["RV"] > 0
    orient = {}
    for v in ("A4C", "A2C", "PLAX", "PSAX"):
        props = regionprops(seqs[v].mask("LV")[0].astype(np.uint8))[0]
        orient[v] = (abs(np.degrees(props.orientation)), props.eccentricity)
    # skimage orientation: angle of the major axis to the row axis (0 = vertical LV).
    assert orient["A4C"][0] < 30 and orient["A2C"][0] < 30
    assert orient["PLAX"][0] > 60
    assert orient["PSAX"][1] < 0.5 < orient["A4C"][1]


def test_explicit_phases_and_patient_are_shared_between_views():
    rng = np.random.default_rng(5)
    p = EchoPatient.random(rng, ef=0.6)
    phases = np.linspace(0.0, p.systole, 9)
    a4 = echo_sequence("A4C", rng, phases=phases, patient=p)
    a2 = echo_sequence("A2C", rng, phases=phases, patient=p)
    assert (a4.ed, a4.es) == (0, 8) == (a2.ed, a2.es)
    assert a4.ef == pytest.approx(60.0, abs=1.0)
    # Still image: no ED/ES unless the phase happens to be one.
    still = echo_sequence("PLAX", rng, phases=np.array([0.5]), patient=p)
    assert still.frames.shape == (1, 112, 112) and still.tracings == {}


def test_pose_and_size_spread_is_realistic():
    """Apical recordings vary in tilt, zoom, place and LV size (the constant mask cannot fake them)."""
    from alan.phantom.echo import POSE_SPREAD

    phi, zoom, col, length = [], [], [], []
    for seed in range(40):
        s = echo_sequence("A4C", seed, n_frames=2)
        pose, patient = s.meta["pose"], s.meta["patient"]
        phi.append(np.rad2deg(pose.phi))
        zoom.append(np.log(pose.scale))
        col.append(np.nonzero(s.mask("LV")[0])[1].mean())
        length.append(patient.lv_length)
        assert s.mask("LV")[0].any()
    assert np.std(phi) > 4.5 and np.ptp(phi) > 20 and np.ptp(phi) <= 2 * (POSE_SPREAD["tilt_deg"] + POSE_SPREAD["sweep_deg"])
    assert np.std(zoom) > 0.05 and np.ptp(np.exp(zoom)) > 0.2
    assert np.std(col) > 2.5  # pixels of 112: the heart moves across the fan
    assert np.ptp(length) / np.mean(length) > 0.3  # LV length +-20 % (and dilation)
