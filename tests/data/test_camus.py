from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk
from fixtures import camus_patient, write_camus_2019, write_camus_nifti

from alan.data import camus
from alan.errors import DataError

NAMES = {1: "LV", 2: "MYO", 3: "LA"}


def _expected_masks(gt_frame):
    return {name: gt_frame == value for value, name in NAMES.items()}


def _patients():
    return {
        "patient0001": {"4CH": camus_patient(seed=1), "2CH": camus_patient(n=6, ed=5, es=1, seed=2)},
        "patient0002": {"4CH": camus_patient(n=4, h=26, w=20, ed=0, es=3, seed=3, spacing=(0.5, 0.25))},
    }


def test_2019_reads_back(tmp_path):
    patients = _patients()
    root = write_camus_2019(tmp_path, patients)
    ds = camus.read(root)
    assert [r.id for r in ds] == ["patient0001_2CH", "patient0001_4CH", "patient0002_4CH"]
    for r in ds:
        pid, view = r.id.split("_")
        d = patients[pid][view]
        assert r.label == {"4CH": "A4C", "2CH": "A2C"}[view] and r.patient == pid and r.split == "train"
        assert (r.n_frames, r.height, r.width) == d["seq"].shape
        assert (r.ed, r.es) == (d["ed"], d["es"])
        assert r.spacing == pytest.approx(d["spacing"])
        assert r.meta["LVef"] == pytest.approx(55.6) and r.meta["release"] == "2019"
        np.testing.assert_array_equal(r.frames, d["seq"])
        masks = r.masks
        assert sorted(masks) == sorted({d["ed"], d["es"]}) == list(r.annotated)
        for f in masks:
            for name, m in _expected_masks(d["gt"][f]).items():
                np.testing.assert_array_equal(masks[f][name], m)


def test_nifti_reads_back_with_splits(tmp_path):
    patients = _patients()
    root = write_camus_nifti(tmp_path, patients, {"patient0001": "training", "patient0002": "validation"})
    ds = camus.read(root)
    assert {r.id: r.split for r in ds} == {"patient0001_2CH": "train", "patient0001_4CH": "train",
                                          "patient0002_4CH": "val"}
    for r in ds:
        pid, view = r.id.split("_")
        d = patients[pid][view]
        assert (r.n_frames, r.height, r.width) == d["seq"].shape
        assert r.meta["FrameRate"] == 40 and r.meta["EF"] == 55
        np.testing.assert_array_equal(r.frames, d["seq"])
        # every half-sequence frame is annotated
        masks = r.masks
        assert list(r.annotated) == list(range(len(d["seq"]))) == sorted(masks)
        for f in masks:
            for name, m in _expected_masks(d["gt"][f]).items():
                np.testing.assert_array_equal(masks[f][name], m)


def test_both_releases_agree_and_match_simpleitk(tmp_path):
    patients = _patients()
    old = {r.id: r for r in camus.read(write_camus_2019(tmp_path / "old", patients))}
    new = {r.id: r for r in camus.read(write_camus_nifti(tmp_path / "new", patients))}
    assert old.keys() == new.keys()
    for rid in old:
        a, b = old[rid], new[rid]
        assert (a.n_frames, a.height, a.width, a.ed, a.es) == (b.n_frames, b.height, b.width, b.ed, b.es)
        assert a.spacing == pytest.approx(b.spacing)
        np.testing.assert_array_equal(a.frames, b.frames)
        for f in a.annotated:
            for name in NAMES.values():
                np.testing.assert_array_equal(a.masks[f][name], b.masks[f][name])
        # independent oracle: SimpleITK reading the NIfTI file itself
        np.testing.assert_array_equal(b.frames, sitk.GetArrayFromImage(sitk.ReadImage(b.source)))


def test_nifti_falls_back_to_ed_es_gt(tmp_path):
    patients = {"patient0003": {"4CH": camus_patient(ed=3, es=1, seed=4)}}
    root = write_camus_nifti(tmp_path, patients, with_sequence_gt=False)
    (r,) = camus.read(root).records
    d = patients["patient0003"]["4CH"]
    assert r.split is None and r.annotated == (1, 3)
    np.testing.assert_array_equal(r.masks[3]["LV"], d["gt"][3] == 1)


@pytest.mark.parametrize("writer", [write_camus_2019, write_camus_nifti])
def test_es_before_ed(tmp_path, writer):
    d = camus_patient(n=7, ed=6, es=0, seed=9)
    (r,) = camus.read(writer(tmp_path, {"patient0009": {"2CH": d}})).records
    assert (r.ed, r.es) == (6, 0)
    np.testing.assert_array_equal(r.masks[6]["LA"], d["gt"][6] == 3)
    np.testing.assert_array_equal(r.frames[6], d["seq"][6])


def test_testing_folder_without_gt(tmp_path):
    root = write_camus_2019(tmp_path, {"patient0401": {"4CH": camus_patient()}}, folder="testing", with_gt=False)
    (r,) = camus.read(root).records
    assert r.split == "test" and r.masks == {} and r.annotated == () and r.ed == 0


def test_listing_reads_no_pixels(tmp_path):
    root = write_camus_2019(tmp_path, _patients())
    for raw in root.rglob("*.raw"):
        raw.write_bytes(b"")
    for nii in write_camus_nifti(tmp_path / "n", _patients()).rglob("*half_sequence.nii.gz"):
        nii.write_bytes(gzip.compress(gzip.decompress(nii.read_bytes())[:352]))  # header only
    ds, dn = camus.read(root), camus.read(tmp_path / "n")
    with pytest.raises(DataError, match="sequence.mhd: cannot read image"):
        ds.records[0].frames
    with pytest.raises(DataError, match="half_sequence.nii.gz: cannot read NIfTI data"):
        dn.records[0].frames


def test_missing_ed_key(tmp_path):
    root = write_camus_2019(tmp_path, {"patient0001": {"4CH": camus_patient()}})
    cfg = root / "training" / "patient0001" / "Info_4CH.cfg"
    cfg.write_text("\n".join(line for line in cfg.read_text().splitlines() if not line.startswith("ED:")))
    with pytest.raises(DataError, match=r"Info_4CH\.cfg: missing key ED"):
        camus.read(root)


def test_ed_out_of_range(tmp_path):
    root = write_camus_2019(tmp_path, {"patient0001": {"4CH": camus_patient(n=5, cfg={"ES": 9})}})
    with pytest.raises(DataError, match=r"Info_4CH\.cfg: ES = 9 is outside the sequence's frames 1\.\.5"):
        camus.read(root)


def test_unknown_label_value(tmp_path):
    d = camus_patient()
    d["gt"][d["ed"], 0, 0] = 7
    root = write_camus_2019(tmp_path, {"patient0001": {"4CH": d}})
    (r,) = camus.read(root).records
    with pytest.raises(DataError, match=r"4CH_ED_gt\.mhd: unknown label value 7"):
        r.masks


def test_mask_shape_mismatch(tmp_path):
    patients = {"patient0001": {"4CH": camus_patient(h=30, w=22)}}
    root = write_camus_nifti(tmp_path, patients)
    wrong = camus_patient(h=22, w=30)
    write_camus_nifti(tmp_path / "other", {"patient0001": {"4CH": wrong}})
    name = "patient0001_4CH_half_sequence_gt.nii.gz"
    (root / "database_nifti" / "patient0001" / name).write_bytes(
        (tmp_path / "other" / "database_nifti" / "patient0001" / name).read_bytes())
    (r,) = camus.read(root).records
    with pytest.raises(DataError, match=r"half_sequence_gt\.nii\.gz: mask shape 5x22x30 differs from image shape 5x30x22"):
        r.masks


def test_missing_sequence_and_missing_gt_counterpart(tmp_path):
    root = write_camus_2019(tmp_path, {"patient0001": {"4CH": camus_patient()}})
    pdir = root / "training" / "patient0001"
    (pdir / "patient0001_4CH_ES_gt.mhd").unlink()
    with pytest.raises(DataError, match=r"patient0001_4CH_ES_gt\.mhd: file not found"):
        camus.read(root)
    (pdir / "patient0001_4CH_sequence.mhd").unlink()
    with pytest.raises(DataError, match=r"patient0001_4CH_sequence\.mhd: file not found \(referenced by Info_4CH\.cfg\)"):
        camus.read(root)


def test_split_list_escaping_root(tmp_path):
    root = write_camus_nifti(tmp_path, {"patient0001": {"4CH": camus_patient()}}, {"patient0001": "training"})
    (root / "database_split" / "subgroup_testing.txt").write_text("../../etc\n")
    with pytest.raises(DataError, match=r"subgroup_testing\.txt: patient name '\.\./\.\./etc' escapes"):
        camus.read(root)


def test_empty_folder(tmp_path):
    (tmp_path / "training").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        camus.read(tmp_path)


def test_mhd_data_file_outside_the_root_is_refused(tmp_path):
    root = write_camus_2019(tmp_path / "camus", {"patient0001": {"4CH": camus_patient()}})
    pdir = root / "training" / "patient0001"
    header = pdir / "patient0001_4CH_sequence.mhd"
    secret = tmp_path / "secret.raw"
    (pdir / "patient0001_4CH_sequence.raw").rename(secret)
    text = header.read_text().replace("ElementDataFile = patient0001_4CH_sequence.raw",
                                      "ElementDataFile = ../../../secret.raw")
    assert text != header.read_text()
    header.write_text(text)
    with pytest.raises(DataError, match=r"secret\.raw: points outside the dataset root .*referenced by "
                                        r"patient0001_4CH_sequence\.mhd"):
        camus.read(root)


def test_ground_truth_symlink_outside_the_root_is_refused(tmp_path):
    import os

    root = write_camus_nifti(tmp_path / "camus", {"patient0001": {"4CH": camus_patient()}})
    gt = root / "database_nifti" / "patient0001" / "patient0001_4CH_half_sequence_gt.nii.gz"
    gt.rename(tmp_path / "gt.nii.gz")
    os.symlink(tmp_path / "gt.nii.gz", gt)
    with pytest.raises(DataError, match=r"half_sequence_gt\.nii\.gz: points outside the dataset root"):
        camus.read(root)
