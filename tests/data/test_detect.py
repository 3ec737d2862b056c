from __future__ import annotations

import pytest
from fixtures import camus_patient, random_frames, write_avi, write_camus_nifti, write_dicom

from alan.data import open_dataset
from alan.data.detect import detect_format
from alan.errors import DataError


def test_each_layout(echonet_data, tmed2_data, camus_data, acdc_data, tmp_path):
    assert detect_format(echonet_data[0]) == "echonet"
    assert detect_format(tmed2_data[0]) == "tmed2"
    assert detect_format(camus_data[0]) == "camus"
    assert detect_format(acdc_data[0]) == "acdc"
    nifti = write_camus_nifti(tmp_path / "nifti", {"patient0001": {"4CH": camus_patient()}})
    assert detect_format(nifti) == "camus"
    write_avi(tmp_path / "vids" / "deep" / "a.avi", random_frames(2, 8, 8))
    assert detect_format(tmp_path / "vids") == "videos"
    dcm = write_dicom(tmp_path / "one" / "x.dcm", random_frames(2, 8, 8))
    assert detect_format(dcm) == "videos"


def test_open_dataset_auto_matches_explicit(camus_data, acdc_data):
    for root, fmt in ((camus_data[0], "camus"), (acdc_data[0], "acdc")):
        auto, explicit = open_dataset(root), open_dataset(root, fmt)
        assert auto.format == fmt and [r.id for r in auto] == [r.id for r in explicit]


def test_tmed2_without_labels_csv_still_detected(tmed2_data):
    root, _ = tmed2_data
    (root / "labels_per_image.csv").unlink()
    assert detect_format(root) == "tmed2"


def test_empty_and_unknown(tmp_path):
    with pytest.raises(DataError, match="empty folder"):
        detect_format(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="unrecognised dataset layout"):
        detect_format(tmp_path)
    with pytest.raises(DataError, match=r"notes\.txt: not a dataset folder"):
        detect_format(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "missing")
