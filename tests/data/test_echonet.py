from __future__ import annotations

import csv
import os

import cv2
import numpy as np
import pytest
from fixtures import ellipse_tracing, random_frames, write_avi, write_echonet
from skimage.draw import polygon

from alan.data import echonet, open_dataset
from alan.errors import DataError


def _skimage_mask(coords, shape):
    """The EchoNet rule re-stated: chord ends, left side down then right side up, rounded."""
    xs = list(coords[1:, 0]) + list(coords[1:, 2][::-1])
    ys = list(coords[1:, 1]) + list(coords[1:, 3][::-1])
    m = np.zeros(shape, bool)
    rr, cc = polygon(np.round(ys), np.round(xs), shape)
    m[rr, cc] = True
    return m


def test_reads_back_what_was_written(echonet_data):
    root, videos = echonet_data
    ds = open_dataset(root, "echonet")
    assert ds.format == "echonet" and len(ds) == 3
    by_id = {r.id: r for r in ds}
    for v in videos:
        r = by_id[v["name"]]
        t, h, w = v["frames"].shape
        assert (r.n_frames, r.height, r.width) == (t, h, w)
        assert r.label == "A4C" and r.patient == v["name"]
        assert r.split == v["split"].lower()
        assert r.meta["EF"] == pytest.approx(v["ef"])
        frames = r.frames
        assert frames.dtype == np.uint8 and frames.shape == (t, h, w)
        np.testing.assert_array_equal(frames, v["frames"])  # FFV1 is lossless
        masks = r.masks
        assert sorted(masks) == sorted(v.get("tracings", {})) == list(r.annotated)
        for f, coords in v.get("tracings", {}).items():
            np.testing.assert_array_equal(masks[f]["LV"], _skimage_mask(coords, (h, w)))


def test_ed_es_by_area_not_row_order(echonet_data):
    root, _ = echonet_data
    by_id = {r.id: r for r in echonet.read(root)}
    # 0X1A: the small tracing (frame 4) comes first in the file, the big one (frame 1) second.
    assert (by_id["0X1A"].ed, by_id["0X1A"].es) == (1, 4)
    assert (by_id["0X2B"].ed, by_id["0X2B"].es) == (0, 3)
    masks = by_id["0X1A"].masks
    assert masks[1]["LV"].sum() > masks[4]["LV"].sum()


def test_untraced_video_has_no_masks(echonet_data):
    root, _ = echonet_data
    r = {r.id: r for r in echonet.read(root)}["0X3C"]
    assert r.masks == {} and r.annotated == () and r.ed is None and r.es is None


def test_polygon_rule_on_an_irregular_tracing():
    g = np.random.default_rng(3)
    coords = ellipse_tracing(30, 25, 15, 9, chords=12) + g.normal(0, 0.7, size=(13, 4))
    shape = (50, 61)
    np.testing.assert_array_equal(echonet.lv_mask(coords, shape), _skimage_mask(coords, shape))
    # the long-axis row is not part of the polygon
    moved = coords.copy()
    moved[0] = (0, 0, 60, 49)
    np.testing.assert_array_equal(echonet.lv_mask(moved, shape), echonet.lv_mask(coords, shape))
    # the shoelace area used for ED/ES agrees with the rasterised area to within the boundary
    area = echonet.traced_area(coords)
    assert abs(area - echonet.lv_mask(coords, shape).sum()) < 0.1 * area


def test_filename_with_extension_accepted(tmp_path):
    root = write_echonet(tmp_path, [dict(name="0XA", frames=random_frames(3, 16, 20))])
    text = (root / "FileList.csv").read_text().replace("0XA,", "0XA.avi,")
    (root / "FileList.csv").write_text(text)
    assert [r.id for r in echonet.read(root)] == ["0XA"]


def _rewrite(path, fn):
    rows = list(csv.reader(open(path)))
    rows = fn(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_missing_column(echonet_data):
    root, _ = echonet_data
    _rewrite(root / "FileList.csv", lambda rows: [r[:-1] for r in rows])
    with pytest.raises(DataError, match=r"FileList\.csv: missing column\(s\) Split"):
        echonet.read(root)


def test_missing_video(echonet_data):
    root, _ = echonet_data
    (root / "Videos" / "0X2B.avi").unlink()
    with pytest.raises(DataError) as e:
        echonet.read(root)
    assert "0X2B.avi" in str(e.value) and "not found" in str(e.value) and "\n" not in str(e.value)


def test_nan_coordinate(echonet_data):
    root, _ = echonet_data

    def blank(rows):
        rows[3][2] = ""
        return rows

    _rewrite(root / "VolumeTracings.csv", blank)
    with pytest.raises(DataError, match=r"VolumeTracings\.csv: line 4: NaN coordinate for 0X1A\.avi"):
        echonet.read(root)


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "sub/../../x"])
def test_name_escaping_root(echonet_data, name):
    root, _ = echonet_data

    def bad(rows):
        rows[1][0] = name
        return rows

    _rewrite(root / "FileList.csv", bad)
    with pytest.raises(DataError, match="escapes the dataset root"):
        echonet.read(root)


def test_bad_frame_size(echonet_data):
    root, _ = echonet_data
    _rewrite(root / "FileList.csv", lambda rows: [rows[0]] + [r[:4] + ["zero"] + r[5:] for r in rows[1:]])
    with pytest.raises(DataError, match=r"line 2: FrameHeight is not a positive integer"):
        echonet.read(root)


def test_corrupt_and_empty_video_fail_on_decode(echonet_data):
    root, _ = echonet_data
    (root / "Videos" / "0X1A.avi").write_bytes(b"RIFF not really a video")
    (root / "Videos" / "0X2B.avi").write_bytes(b"")
    recs = {r.id: r for r in echonet.read(root)}  # listing still works: nothing decoded
    for rid in ("0X1A", "0X2B"):
        with pytest.raises(DataError) as e:
            recs[rid].frames
        assert f"{rid}.avi" in str(e.value) and "\n" not in str(e.value)


def test_decoded_size_must_match_filelist(echonet_data):
    root, _ = echonet_data
    _rewrite(root / "FileList.csv", lambda rows: [rows[0]] + [r[:4] + ["40"] + r[5:] for r in rows[1:]])
    r = echonet.read(root).records[0]
    with pytest.raises(DataError, match="decoded frames are 36x44 but FileList.csv says 40x44"):
        r.frames


def test_empty_filelist(tmp_path):
    (tmp_path / "Videos").mkdir()
    (tmp_path / "FileList.csv").write_text("")
    with pytest.raises(DataError, match="FileList.csv: empty file"):
        echonet.read(tmp_path)


def test_tracing_of_a_frame_the_video_lacks_is_an_error(echonet_data):
    root, _ = echonet_data
    with open(root / "VolumeTracings.csv", "a", newline="") as f:
        w = csv.writer(f)
        for row in ellipse_tracing(10, 10, 5, 3):
            w.writerow(["0X3C.avi", *row, 99])
    with pytest.raises(DataError, match="VolumeTracings.csv: 0X3C is traced at frame 99, but the video has 4 frames"):
        echonet.read(root)


def test_tracings_of_an_unknown_video_are_skipped(echonet_data):
    root, _ = echonet_data
    with open(root / "VolumeTracings.csv", "a", newline="") as f:
        w = csv.writer(f)
        for row in ellipse_tracing(10, 10, 5, 3):
            w.writerow(["0XGONE.avi", *row, 0])
    assert echonet.read(root).skipped == {"tracings of a video not in FileList.csv": 1}


def test_listing_10000_rows_decodes_nothing(tmp_path, monkeypatch):
    n = 10_000
    (tmp_path / "Videos").mkdir()
    placeholder = tmp_path / "placeholder.avi"
    placeholder.touch()
    with open(tmp_path / "FileList.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(echonet.FILELIST_COLUMNS)
        for i in range(n):
            w.writerow([f"0X{i:05X}", 50, 30, 60, 112, 112, 50, 100, ["TRAIN", "VAL", "TEST"][i % 3]])
            os.link(placeholder, tmp_path / "Videos" / f"0X{i:05X}.avi")  # exists, never decoded
    with open(tmp_path / "VolumeTracings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(echonet.TRACING_COLUMNS)
        big, small = ellipse_tracing(56, 56, 30, 20), ellipse_tracing(56, 56, 25, 12)
        for i in range(0, n, 7):
            for frame, c in ((10, small), (40, big)):
                for row in c:
                    w.writerow([f"0X{i:05X}.avi", *row, frame])

    def no_decode(*a, **k):
        raise AssertionError("listing must not open a video")

    monkeypatch.setattr(cv2, "VideoCapture", no_decode)
    ds = echonet.read(tmp_path)
    assert len(ds) == n and ds.splits() == {"train": 3334, "val": 3333, "test": 3333}
    traced = [r for r in ds if r.annotated]
    assert len(traced) == len(range(0, n, 7)) and all((r.ed, r.es) == (40, 10) for r in traced)


# ---------------------------------------------------------------- decode-time checks, containment, odd values
def test_truncated_video_fails_on_decode_naming_it(echonet_data):
    root, _ = echonet_data
    path = root / "Videos" / "0X1A.avi"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    rec = {r.id: r for r in echonet.read(root)}["0X1A"]
    with pytest.raises(DataError, match=r"0X1A\.avi: decodes to \d frames? but FileList\.csv says 6"):
        rec.frames


def test_video_shorter_than_listed_is_an_error(echonet_data):
    # a video whose FileList row claims more frames than it has: a traced frame past the end would
    # otherwise be an IndexError far downstream
    root, videos = echonet_data
    write_avi(root / "Videos" / "0X1A.avi", videos[0]["frames"][:3])
    rec = {r.id: r for r in echonet.read(root)}["0X1A"]
    with pytest.raises(DataError, match="decodes to 3 frames but FileList.csv says 6"):
        rec.frames


def test_image_renamed_avi_is_refused(echonet_data):
    root, _ = echonet_data
    ok, png = cv2.imencode(".png", random_frames(1, 36, 44)[0])
    (root / "Videos" / "0X3C.avi").write_bytes(png.tobytes())
    rec = {r.id: r for r in echonet.read(root)}["0X3C"]
    with pytest.raises(DataError, match=r"0X3C\.avi: cannot open video: not a valid \.avi file \(its content is a PNG"):
        rec.frames


def test_video_symlink_out_of_the_root_is_refused(echonet_data, tmp_path):
    root, _ = echonet_data
    outside = tmp_path / "elsewhere.avi"
    (root / "Videos" / "0X2B.avi").rename(outside)
    os.symlink(outside, root / "Videos" / "0X2B.avi")
    with pytest.raises(DataError, match=r"0X2B\.avi: points outside the dataset root .* \(referenced by FileList\.csv\)"):
        echonet.read(root)
    # a symlink that stays inside the root is fine
    (root / "Videos" / "0X2B.avi").unlink()
    (root / "store").mkdir()
    outside.rename(root / "store" / "0X2B.avi")
    os.symlink(root / "store" / "0X2B.avi", root / "Videos" / "0X2B.avi")
    assert len(echonet.read(root)) == 3


def _edit_filelist(root, column, row, value):
    import pandas as pd

    df = pd.read_csv(root / "FileList.csv", dtype=str)
    df.loc[row, column] = value
    df.to_csv(root / "FileList.csv", index=False)


def test_unknown_split_warns(echonet_data):
    from alan.errors import DataWarning

    root, _ = echonet_data
    _edit_filelist(root, "Split", 2, "HOLDOUT")
    with pytest.warns(DataWarning, match=r"FileList\.csv: line 4: unknown Split 'holdout'"):
        ds = echonet.read(root)
    assert ds.splits() == {"train": 1, "val": 1, "holdout": 1}


def test_non_numeric_ef_warns_naming_the_file(echonet_data):
    from alan.errors import DataWarning

    root, _ = echonet_data
    _edit_filelist(root, "EF", 0, "sixty")
    with pytest.warns(DataWarning, match=r"FileList\.csv: line 2: EF is not a number \('sixty'\)"):
        ds = echonet.read(root)
    assert np.isnan({r.id: r for r in ds}["0X1A"].meta["EF"])
