from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from fixtures import acdc_patient, write_acdc

from alan.data import acdc
from alan.errors import DataError

NAMES = {1: "RV", 2: "MYO", 3: "LV"}


def test_reads_back_one_record_per_slice(acdc_data):
    root, patients = acdc_data
    ds = acdc.read(root)
    assert len(ds) == sum(p["cine"].shape[2] for p in patients.values())
    for r in ds:
        pid, s = r.id.split("_s")
        d, s = patients[pid], int(s)
        x, y, z, t = d["cine"].shape
        assert (r.n_frames, r.height, r.width) == (t, y, x)
        assert (r.ed, r.es) == (d["ed"], d["es"]) and r.label == d["group"] and r.split == "train"
        assert r.patient == pid and r.meta["slice"] == s and r.meta["n_slices"] == z
        assert r.meta["Height"] == 180.0 and r.meta["Weight"] == 80.0
        assert r.spacing == pytest.approx((d["zooms"][1], d["zooms"][0]))
        frames = r.frames
        assert frames.dtype == d["cine"].dtype
        np.testing.assert_array_equal(frames, d["cine"][:, :, s, :].transpose(2, 1, 0))
        masks = r.masks
        assert sorted(masks) == sorted(d["gts"]) == list(r.annotated)
        for f, lab in d["gts"].items():
            for value, name in NAMES.items():
                np.testing.assert_array_equal(masks[f][name], lab[:, :, s].T == value)


def test_orientation_matches_simpleitk(acdc_data):
    root, _ = acdc_data
    r = acdc.read(root).records[1]
    ref = sitk.GetArrayFromImage(sitk.ReadImage(r.source))  # (T, Z, Y, X)
    np.testing.assert_array_equal(r.frames, ref[:, r.meta["slice"]])
    gt = root / "training" / "patient001" / f"patient001_frame{r.ed + 1:02d}_gt.nii.gz"
    ref_gt = sitk.GetArrayFromImage(sitk.ReadImage(str(gt)))[r.meta["slice"]]
    np.testing.assert_array_equal(r.masks[r.ed]["LV"], ref_gt == 3)


def test_testing_folder_without_gt(tmp_path):
    root = write_acdc(tmp_path, {"patient101": acdc_patient(with_gt=False, group="HCM")}, folder="testing")
    ds = acdc.read(root)
    assert {r.split for r in ds} == {"test"} and all(r.masks == {} for r in ds)
    assert ds.classes() == {"HCM": len(ds)}


def test_es_before_ed(tmp_path):
    d = acdc_patient(ed=5, es=2, seed=4)
    r = acdc.read(write_acdc(tmp_path, {"patient003": d})).records[0]
    assert (r.ed, r.es) == (5, 2)
    np.testing.assert_array_equal(r.masks[5]["RV"], d["gts"][5][:, :, 0].T == 1)


def test_unknown_group(acdc_data):
    root, _ = acdc_data
    cfg = root / "training" / "patient001" / "Info.cfg"
    cfg.write_text(cfg.read_text().replace("Group: DCM", "Group: XYZ"))
    with pytest.raises(DataError, match=r"patient001/Info\.cfg: unknown Group 'XYZ'"):
        acdc.read(root)


def test_missing_es_key(acdc_data):
    root, _ = acdc_data
    cfg = root / "training" / "patient002" / "Info.cfg"
    cfg.write_text("\n".join(line for line in cfg.read_text().splitlines() if not line.startswith("ES")))
    with pytest.raises(DataError, match=r"patient002/Info\.cfg: missing key ES"):
        acdc.read(root)


def test_unknown_label_value_and_shape_mismatch(acdc_data):
    root, patients = acdc_data
    d = patients["patient001"]
    gt_path = root / "training" / "patient001" / "patient001_frame01_gt.nii.gz"
    lab = d["gts"][0].copy()
    lab[0, 0, :] = 5
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(gt_path))
    r = acdc.read(root).records[0]
    with pytest.raises(DataError, match=r"frame01_gt\.nii\.gz: unknown label value 5"):
        r.masks
    nib.save(nib.Nifti1Image(lab[:, :-1], np.eye(4)), str(gt_path))
    r = acdc.read(root).records[0]
    with pytest.raises(DataError, match=r"frame01_gt\.nii\.gz: mask shape 18x13x3 differs from image shape 18x14x3"):
        r.masks


def test_missing_gt_counterpart_and_cine(acdc_data):
    root, _ = acdc_data
    pdir = root / "training" / "patient001"
    (pdir / "patient001_frame04_gt.nii.gz").unlink()
    with pytest.raises(DataError, match=r"patient001_frame04_gt\.nii\.gz: file not found"):
        acdc.read(root)
    (pdir / "patient001_4d.nii.gz").unlink()
    with pytest.raises(DataError, match=r"patient001_4d\.nii\.gz: file not found"):
        acdc.read(root)


def test_empty_folder(tmp_path):
    (tmp_path / "training").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        acdc.read(tmp_path)


def test_frames_are_writable_copies(tmp_path):
    root = write_acdc(tmp_path, {"patient004": acdc_patient(z=1)})
    (r,) = acdc.read(root).records
    a = r.frames
    a[...] = 0
    assert r.frames.any()


def test_cine_symlink_outside_the_root_is_refused(acdc_data, tmp_path):
    import os

    root, _ = acdc_data
    cine = root / "training" / "patient001" / "patient001_4d.nii.gz"
    cine.rename(tmp_path / "cine.nii.gz")
    os.symlink(tmp_path / "cine.nii.gz", cine)
    with pytest.raises(DataError, match=r"patient001_4d\.nii\.gz: points outside the dataset root"):
        acdc.read(root)
