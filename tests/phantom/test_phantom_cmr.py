"""CMR phantom: determinism, group characteristics, masks, the spurious feature on/off/broken."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from alan.phantom.cmr import GROUPS, SPURIOUS_SITES, cmr_patient

SMALL = {"size": (96, 96), "n_slices": 3, "n_frames": 10}


@pytest.fixture(scope="module")
def cohort():
    """Three patients per group (small images)."""
    return {g: [cmr_patient(g, 1000 * i + k, **SMALL) for k in range(3)] for i, g in enumerate(GROUPS)}


def _mid_thickness(c, frame: int) -> float:
    """Mean wall thickness (mm) of the middle slice from areas: r_epi - r_endo of equal-area circles."""
    z = c.image.shape[0] // 2
    lv = c.mask("LV")[z, frame].sum()
    epi = lv + c.mask("MYO")[z, frame].sum()
    return float((np.sqrt(epi / np.pi) - np.sqrt(lv / np.pi)) * c.spacing[0])


def _ef(c) -> float:
    return 1.0 - c.volume_ml("LV", c.es) / c.volume_ml("LV", c.ed)


def test_same_seed_same_arrays():
    a = cmr_patient("HCM", 4, **SMALL)
    b = cmr_patient("HCM", 4, **SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, cmr_patient("HCM", 5, **SMALL).image)


def test_native_dtype_shapes_and_intensity_range(cohort):
    c = cohort["NOR"][0]
    assert c.image.dtype == np.int16 and c.labels.dtype == np.uint8
    assert c.image.shape == c.labels.shape == (3, 10, 96, 96)
    assert c.image.min() >= 0 and 500 < np.percentile(c.image, 99.5) < 1400
    assert set(np.unique(c.labels)) == {0, 1, 2, 3}
    # SSFP look: bright blood pool, dark myocardium.
    assert c.image[c.mask("LV")].mean() > 2.5 * c.image[c.mask("MYO")].mean()


def test_lv_largest_at_ed_smallest_at_es(cohort):
    for cs in cohort.values():
        for c in cs:
            vol = np.array([c.volume_ml("LV", t) for t in range(c.image.shape[1])])
            assert vol[c.ed] == vol.max() and vol[c.es] == vol.min()


def test_group_characteristics(cohort):
    mean = lambda g, f: float(np.mean([f(c) for c in cohort[g]]))  # noqa: E731
    lvedv = lambda c: c.volume_ml("LV", c.ed)  # noqa: E731
    rvedv = lambda c: c.volume_ml("RV", c.ed)  # noqa: E731
    thick = lambda c: _mid_thickness(c, c.ed)  # noqa: E731
    assert mean("DCM", lvedv) > 1.5 * mean("NOR", lvedv)
    assert mean("DCM", _ef) < 0.4 < mean("NOR", _ef)
    assert mean("DCM", thick) < mean("NOR", thick)
    assert mean("HCM", thick) > 1.5 * mean("NOR", thick)
    assert mean("HCM", lvedv) < mean("NOR", lvedv) and mean("HCM", _ef) > mean("NOR", _ef)
    assert mean("RV", rvedv) > 1.5 * mean("NOR", rvedv)
    assert abs(mean("RV", lvedv) / mean("NOR", lvedv) - 1) < 0.3
    assert mean("MINF", _ef) < mean("NOR", _ef)


def _ray_thickness(myo: np.ndarray, lv: np.ndarray, n: int = 72) -> np.ndarray:
    """Myocardium pixels along n rays from the LV centroid."""
    cy, cx = ndimage.center_of_mass(lv)
    t = np.arange(0, 60, 0.25)
    out = []
    for a in np.linspace(0, 2 * np.pi, n, endpoint=False):
        r = np.clip(np.rint(cy + t * np.sin(a)).astype(int), 0, myo.shape[0] - 1)
        c = np.clip(np.rint(cx + t * np.cos(a)).astype(int), 0, myo.shape[1] - 1)
        out.append(myo[r, c].sum() * 0.25)
    return np.array(out)


def test_infarct_is_a_thin_akinetic_segment():
    minf = cmr_patient("MINF", 31, size=(128, 128), n_slices=3, n_frames=12)
    nor = cmr_patient("NOR", 31, size=(128, 128), n_slices=3, n_frames=12)
    z = 1
    th_m = _ray_thickness(minf.mask("MYO")[z, minf.ed], minf.mask("LV")[z, minf.ed])
    th_n = _ray_thickness(nor.mask("MYO")[z, nor.ed], nor.mask("LV")[z, nor.ed])
    assert th_m.min() < 0.6 * np.median(th_m)
    assert th_n.min() > 0.7 * np.median(th_n)
    # Akinetic: along the thinnest ray the endocardium barely moves between ED and ES,
    # while the opposite wall moves inward.
    cy, cx = ndimage.center_of_mass(minf.mask("LV")[z, minf.ed])

    def endo(frame: int, angle: float) -> float:
        lv = minf.mask("LV")[z, frame]
        t = np.arange(0, 60, 0.25)
        r = np.clip(np.rint(cy + t * np.sin(angle)).astype(int), 0, 127)
        c = np.clip(np.rint(cx + t * np.cos(angle)).astype(int), 0, 127)
        return float(t[np.argmin(lv[r, c])])

    a = np.linspace(0, 2 * np.pi, 72, endpoint=False)[np.argmin(th_m)]
    scar_motion = endo(minf.ed, a) - endo(minf.es, a)
    far_motion = endo(minf.ed, a + np.pi) - endo(minf.es, a + np.pi)
    assert scar_motion < 0.35 * far_motion


def test_masks_nest_myo_around_lv_rv_beside_it(cohort):
    for cs in cohort.values():
        c = cs[0]
        lv, myo, rv = c.mask("LV"), c.mask("MYO"), c.mask("RV")
        cross = np.zeros((1, 1, 3, 3), bool)
        cross[0, 0] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
        grown = ndimage.binary_dilation(lv, structure=cross)  # in-plane, per slice and frame
        assert not np.any(grown & ~(lv | myo))  # LV is enclosed by MYO on every slice and frame
        assert not np.any(rv & (lv | myo))
        # The RV touches the septum (MYO) in the basal slice.
        assert np.any(ndimage.binary_dilation(rv[0, c.ed]) & myo[0, c.ed])


def _blob_position(c) -> tuple[int, int]:
    """(row, col) of the planted blob: the brightest 5x5 patch outside the heart."""
    img = c.image[0, 0].astype(float)
    heart = ndimage.binary_dilation((c.labels[0, 0] > 0), iterations=3)
    img[heart] = 0
    r, col = np.unravel_index(np.argmax(ndimage.uniform_filter(img, 5)), img.shape)
    return int(r), int(col)


def test_spurious_blob_lies_outside_the_heart_and_changes_nothing_inside():
    off = cmr_patient("DCM", 9, **SMALL)
    on = cmr_patient("DCM", 9, spurious="train", **SMALL)
    np.testing.assert_array_equal(on.labels, off.labels)
    heart = on.labels > 0
    np.testing.assert_array_equal(on.image[heart], off.image[heart])
    differs = on.image != off.image
    assert differs.sum() > 0
    assert not np.any(differs & ndimage.binary_dilation(heart, iterations=2))
    assert on.spurious["mode"] == "train" and off.spurious is None
    assert on.image.max() > 1000 >= np.percentile(off.image, 99.9)


def test_spurious_site_follows_class_in_train_and_not_when_broken():
    n, p = 60, 0.9
    rng = np.random.default_rng(0)
    groups = [GROUPS[i % 5] for i in range(n)]
    tiny = {"size": (48, 48), "n_slices": 1, "n_frames": 4}
    train = [cmr_patient(g, rng, spurious="train", spurious_p=p, **tiny).spurious for g in groups]
    broken = [cmr_patient(g, rng, spurious="broken", **tiny).spurious for g in groups]
    in_train = np.mean([s["site"] == GROUPS.index(g) for s, g in zip(train, groups)])
    in_broken = np.mean([s["site"] == GROUPS.index(g) for s, g in zip(broken, groups)])
    assert in_train > 0.75 and in_broken < 0.45
    assert len({s["site"] for s in broken}) == len(SPURIOUS_SITES)


def test_blob_position_encodes_the_site():
    sites = {}
    for k in range(10):
        c = cmr_patient(GROUPS[k % 5], 50 + k, spurious="train", size=(96, 96), n_slices=1, n_frames=3)
        sites.setdefault(c.spurious["site"], []).append(_blob_position(c))
    # Blobs of the same site land close together, different sites far apart.
    centres = {s: np.mean(v, axis=0) for s, v in sites.items()}
    for s, v in sites.items():
        assert all(np.hypot(*(np.array(p) - centres[s])) < 15 for p in v)
    keys = list(centres)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            assert np.hypot(*(centres[keys[i]] - centres[keys[j]])) > 15


def test_bad_arguments():
    with pytest.raises(ValueError):
        cmr_patient("XYZ", 0, **SMALL)
    with pytest.raises(ValueError):
        cmr_patient("NOR", 0, spurious="yes", **SMALL)
