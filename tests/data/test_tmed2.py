from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from alan.data import tmed2
from alan.errors import DataError


def _gray(img):
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def test_fold0_reads_back(tmed2_data):
    root, images = tmed2_data
    ds = tmed2.read(root)
    kept = [im for im in images if im["view"] in ("PLAX", "PSAX", "A4C", "A2C")]
    assert [r.id for r in ds] == [im["key"][:-4] for im in kept]
    assert ds.skipped == {"view A4CorA2CorOther": 1, "view Not_Provided": 1}
    for r, im in zip(ds, kept):
        assert r.label == im["view"] and r.split == im["split"][0]
        assert r.patient == im["key"].split("_")[0]
        assert r.meta["diagnosis"] == im["diagnosis"]
        expected = _gray(im["img"])
        assert (r.n_frames, r.height, r.width) == (1, *expected.shape)
        frames = r.frames
        assert frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, expected[None])
        assert r.masks == {} and r.annotated == ()
    assert ds.classes() == {"PLAX": 1, "A4C": 1, "PSAX": 1, "A2C": 1}


def test_fold_is_selectable(tmed2_data):
    root, images = tmed2_data
    kept = [im for im in images if im["view"] in ("PLAX", "PSAX", "A4C", "A2C")]
    assert [r.split for r in tmed2.read(root, fold=1)] == [im["split"][1] for im in kept]
    with pytest.raises(DataError, match=r"DEV165/TMED2_fold0_labeledpart\.csv: file not found"):
        tmed2.read(root, dev="DEV165")


def test_without_fold_uses_labels_per_image(tmed2_data):
    root, images = tmed2_data
    ds = tmed2.read(root, fold=None)
    assert len(ds) == 4 and all(r.split is None for r in ds)
    assert {r.id: r.label for r in ds} == {im["key"][:-4]: im["view"] for im in images
                                           if im["view"] in ("PLAX", "PSAX", "A4C", "A2C")}


def _rewrite(path, fn):
    rows = list(csv.reader(open(path)))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(fn(rows))


def test_unknown_view(tmed2_data):
    root, _ = tmed2_data

    def bad(rows):
        rows[2][2] = "SUBCOSTAL"
        return rows

    _rewrite(root / "DEV479" / "TMED2_fold0_labeledpart.csv", bad)
    with pytest.raises(DataError, match=r"fold0_labeledpart\.csv: line 3: unknown view label 'SUBCOSTAL'"):
        tmed2.read(root)


def test_missing_column(tmed2_data):
    root, _ = tmed2_data
    _rewrite(root / "DEV479" / "TMED2_fold0_labeledpart.csv", lambda rows: [r[:2] + r[3:] for r in rows])
    with pytest.raises(DataError, match=r"missing column\(s\) view_label"):
        tmed2.read(root)


def test_missing_image(tmed2_data):
    root, _ = tmed2_data
    (root / "view_labeled_set" / "labeled" / "303s1_4.png").unlink()
    with pytest.raises(DataError, match=r"303s1_4\.png: file not found \(listed in TMED2_fold0_labeledpart\.csv line 5\)"):
        tmed2.read(root)


@pytest.mark.parametrize("column, value", [(0, "../../secret.png"), (1, "/abs/folder")])
def test_escaping_names(tmed2_data, column, value):
    root, _ = tmed2_data

    def bad(rows):
        rows[1][column] = value
        return rows

    _rewrite(root / "DEV479" / "TMED2_fold0_labeledpart.csv", bad)
    with pytest.raises(DataError, match="escapes the dataset root"):
        tmed2.read(root)


def test_corrupt_png(tmed2_data):
    root, _ = tmed2_data
    path = root / "view_and_diagnosis_labeled_set" / "labeled" / "101s1_0.png"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"101s1_0\.png: not a PNG file"):
        tmed2.read(root)
    good = (root / "view_and_diagnosis_labeled_set" / "labeled" / "101s1_1.png").read_bytes()
    path.write_bytes(good[:40])  # header intact, image data cut
    r = tmed2.read(root).records[0]
    with pytest.raises(DataError, match=r"101s1_0\.png: cannot decode image"):
        r.frames


def test_image_symlink_outside_the_root_is_refused(tmed2_data, tmp_path):
    import os

    root, _ = tmed2_data
    from pathlib import Path

    png = Path(tmed2.read(root).records[0].source)
    png.rename(tmp_path / "elsewhere.png")
    os.symlink(tmp_path / "elsewhere.png", png)
    with pytest.raises(DataError, match=f"{png.name}: points outside the dataset root"):
        tmed2.read(root)
