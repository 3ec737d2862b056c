"""Reader helpers: containment, MetaImage data files, container sniffing, checked video writes."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from fixtures import random_frames, write_avi

from alan.data._util import (check_container, inside, mhd_data_files, numeric_column, read_video, split_names,
                             write_video)
from alan.errors import DataError, DataWarning


def test_inside_follows_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside.avi").write_bytes(b"x")
    (root / "sub" / "in.avi").write_bytes(b"x")
    os.symlink(root / "sub" / "in.avi", root / "link_in.avi")
    os.symlink(tmp_path / "outside.avi", root / "link_out.avi")
    os.symlink(tmp_path, root / "sub" / "up")
    assert inside(root, root / "link_in.avi") == root / "link_in.avi"
    with pytest.raises(DataError, match=r"link_out\.avi: points outside the dataset root"):
        inside(root, root / "link_out.avi")
    with pytest.raises(DataError, match="points outside"):
        inside(root, root / "sub" / "up" / "outside.avi")
    with pytest.raises(DataError, match=r"referenced by a\.mhd"):
        inside(root, root / ".." / "outside.avi", root / "a.mhd")


@pytest.mark.parametrize("line,names", [
    ("ElementDataFile = a.raw", ["a.raw"]),
    ("ElementDataFile = ../../etc/x.raw", ["../../etc/x.raw"]),
    ("ElementDataFile = /abs/x.raw", ["/abs/x.raw"]),
    ("ElementDataFile = s%02d.raw 1 3 1", ["s01.raw", "s02.raw", "s03.raw"]),
    ("ElementDataFile = LIST\np1.raw\np2.raw", ["p1.raw", "p2.raw"]),
    ("ElementDataFile = LOCAL", []),
])
def test_mhd_data_files(tmp_path, line, names):
    header = tmp_path / "a.mhd"
    header.write_text(f"ObjectType = Image\nNDims = 2\nDimSize = 2 2\nElementType = MET_UCHAR\n{line}\n")
    assert mhd_data_files(header) == [tmp_path / n for n in names]  # an absolute name stays absolute


def test_mhd_without_data_file_is_refused(tmp_path):
    (tmp_path / "a.mhd").write_text("ObjectType = Image\n")
    with pytest.raises(DataError, match="no ElementDataFile"):
        mhd_data_files(tmp_path / "a.mhd")


def test_container_sniffing(tmp_path):
    import cv2

    ok, png = cv2.imencode(".png", random_frames(1, 8, 8)[0])
    (tmp_path / "img.avi").write_bytes(png.tobytes())
    with pytest.raises(DataError, match=r"img\.avi: cannot open video: not a valid \.avi file \(its content is a PNG image\)"):
        check_container(tmp_path / "img.avi")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="content is empty"):
        check_container(tmp_path / "empty.mp4")
    check_container(write_avi(tmp_path / "real.avi", random_frames(2, 8, 8)))


def test_truncated_video_is_an_error_not_fewer_frames(tmp_path):
    path = write_avi(tmp_path / "a.avi", random_frames(20, 24, 30, 1))
    np.testing.assert_array_equal(read_video(path, 20, 24, 30), random_frames(20, 24, 30, 1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(DataError, match=r"a\.avi: decodes to \d+ frames? but FileList\.csv says 20 \(truncated"):
        read_video(path, 20, 24, 30, listed_in="FileList.csv")
    with pytest.raises(DataError, match="decoded frames are 24x30 but FileList.csv says 24x31"):
        read_video(write_avi(tmp_path / "b.avi", random_frames(3, 24, 30)), 3, 24, 31, listed_in="FileList.csv")


def test_write_video_round_trip(tmp_path):
    frames = random_frames(7, 16, 20, 2)
    write_video(tmp_path / "v.avi", frames, fps=25)
    np.testing.assert_array_equal(read_video(tmp_path / "v.avi"), frames)  # FFV1 is lossless


def test_non_numeric_value_warns_with_line(tmp_path):
    df = pd.DataFrame({"EF": ["55.1", "", "n/a", "60"]})
    with pytest.warns(DataWarning, match=r"list\.csv: line 4: EF is not a number \('n/a'\); read as missing"):
        values = numeric_column(df, "EF", tmp_path / "list.csv", allow_nan=True)
    np.testing.assert_array_equal(np.isnan(values), [False, True, True, False])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        numeric_column(pd.DataFrame({"EF": ["1", None]}), "EF", tmp_path / "list.csv", allow_nan=True)


def test_unknown_split_warns_once_per_value(tmp_path):
    with pytest.warns(DataWarning) as record:
        out = split_names(["TRAIN", "HOLDOUT", "VAL", "holdout", None, " "], tmp_path / "FileList.csv", "Split")
    assert out == ["train", "holdout", "val", "holdout", None, None]
    assert len(record) == 1
    assert "FileList.csv: line 3: unknown Split 'holdout' (2 rows; expected train, val, test)" in str(record[0].message)
