from __future__ import annotations

import cv2
import numpy as np
import pytest
from fixtures import random_frames, write_avi, write_dicom

from alan.data import videos
from alan.errors import DataError


def _rgb_frames(t, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


def _cv2_gray(rgb):
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb])


def test_folder_of_avi_mp4_and_dicom(tmp_path):
    avi = random_frames(5, 24, 30, 1)
    write_avi(tmp_path / "a" / "clip.avi", avi, fps=25)
    write_avi(tmp_path / "b.mp4", random_frames(4, 16, 20, 2), fourcc="mp4v")
    mono = random_frames(3, 12, 18, 3)
    write_dicom(tmp_path / "c" / "mono.dcm", mono, CineRate=30, PixelSpacing=[0.2, 0.3])
    rgb = _rgb_frames(4, 10, 14, 4)
    write_dicom(tmp_path / "c" / "IM0001", rgb, "RGB", FrameTime=20.0)
    (tmp_path / "notes.txt").write_text("not media")
    ds = videos.read(tmp_path)
    by_id = {r.id: r for r in ds}
    assert sorted(by_id) == ["a/clip", "b", "c/IM0001", "c/mono"]
    assert all(r.label is None and r.split is None and r.masks == {} for r in ds)

    r = by_id["a/clip"]
    assert (r.n_frames, r.height, r.width) == (5, 24, 30) and r.meta["FPS"] == pytest.approx(25)
    np.testing.assert_array_equal(r.frames, avi)  # lossless FFV1
    b = by_id["b"].frames
    assert b.shape == (4, 16, 20) and b.dtype == np.uint8

    r = by_id["c/mono"]
    assert (r.n_frames, r.height, r.width) == (3, 12, 18) and r.spacing == (0.2, 0.3)
    assert r.meta["FPS"] == 30 and r.patient == "P001"
    np.testing.assert_array_equal(r.frames, mono)
    r = by_id["c/IM0001"]
    assert r.meta["FPS"] == pytest.approx(50)
    np.testing.assert_array_equal(r.frames, _cv2_gray(rgb))


def test_dicom_ybr_and_single_frame(tmp_path):
    rgb = _rgb_frames(3, 9, 11, 5)
    write_dicom(tmp_path / "ybr.dcm", rgb, "YBR_FULL")
    (r,) = videos.read(tmp_path / "ybr.dcm").records
    got = r.frames.astype(int)
    assert got.shape == (3, 9, 11)
    # YBR -> RGB round trip loses at most a level or two per channel
    assert np.abs(got - _cv2_gray(rgb)).max() <= 2
    single = random_frames(1, 8, 10, 6)[0]
    write_dicom(tmp_path / "one.dcm", single, multiframe=False)
    (r,) = videos.read(tmp_path / "one.dcm").records
    assert r.n_frames == 1
    np.testing.assert_array_equal(r.frames, single[None])
    write_dicom(tmp_path / "inv.dcm", single[None], "MONOCHROME1")
    (r,) = videos.read(tmp_path / "inv.dcm").records
    np.testing.assert_array_equal(r.frames, 255 - single[None])


def test_listing_does_not_decode(tmp_path, monkeypatch):
    write_avi(tmp_path / "v.avi", random_frames(3, 8, 8))
    write_dicom(tmp_path / "d.dcm", random_frames(2, 8, 8))
    import pydicom

    real = pydicom.dcmread

    def header_only(*a, **k):
        assert k.get("stop_before_pixels"), "listing must not read DICOM pixel data"
        return real(*a, **k)

    monkeypatch.setattr(pydicom, "dcmread", header_only)
    monkeypatch.setattr(cv2.VideoCapture, "read", lambda self: (_ for _ in ()).throw(AssertionError("decoded")))
    assert len(videos.read(tmp_path)) == 2


def test_empty_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="empty folder: no AVI, MP4 or DICOM files found"):
        videos.read(tmp_path)


def test_corrupt_files(tmp_path):
    (tmp_path / "bad.avi").write_bytes(b"garbage" * 10)
    with pytest.raises(DataError) as e:
        videos.read(tmp_path)
    assert "bad.avi" in str(e.value) and "cannot open video" in str(e.value)
    (tmp_path / "bad.avi").unlink()
    (tmp_path / "bad.dcm").write_text("not a DICOM file at all")
    with pytest.raises(DataError, match=r"bad\.dcm: not a readable DICOM file"):
        videos.read(tmp_path)
    (tmp_path / "bad.dcm").unlink()
    (tmp_path / "IM0002").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 20)  # DICOM, no image
    with pytest.raises(DataError, match=r"no video or DICOM image found \(IM0002 and any other"):
        videos.read(tmp_path)


def test_truncated_dicom_pixels_fail_on_decode(tmp_path):
    path = write_dicom(tmp_path / "t.dcm", random_frames(4, 16, 16))
    path.write_bytes(path.read_bytes()[:-300])
    (r,) = videos.read(tmp_path).records
    with pytest.raises(DataError) as e:
        r.frames
    assert "t.dcm" in str(e.value) and "\n" not in str(e.value)


def test_duplicate_stems_keep_suffix(tmp_path):
    write_avi(tmp_path / "x.avi", random_frames(2, 8, 8))
    write_avi(tmp_path / "x.mp4", random_frames(2, 8, 8), fourcc="mp4v")
    assert sorted(r.id for r in videos.read(tmp_path)) == ["x.avi", "x.mp4"]


def test_dicom_without_image_is_counted(tmp_path):
    write_avi(tmp_path / "v.avi", random_frames(2, 8, 8))
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 20)
    ds = videos.read(tmp_path)
    assert [r.id for r in ds] == ["v"] and ds.skipped == {"DICOM file without image data": 1}


def test_symlink_outside_the_folder_is_refused(tmp_path):
    import os

    root = tmp_path / "root"
    write_avi(root / "in.avi", random_frames(3, 8, 8))
    write_avi(tmp_path / "out.avi", random_frames(3, 8, 8))
    os.symlink(tmp_path / "out.avi", root / "link.avi")
    with pytest.raises(DataError, match=r"link\.avi: points outside the dataset root"):
        videos.read(root)


def test_truncated_avi_is_refused_on_decode(tmp_path):
    path = write_avi(tmp_path / "a.avi", random_frames(20, 24, 30, 1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    (r,) = videos.read(tmp_path).records
    assert r.n_frames == 20
    with pytest.raises(DataError, match=r"a\.avi: decodes to \d+ frames? but its container says 20"):
        r.frames
