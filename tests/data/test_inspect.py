from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import typer
from fixtures import camus_patient, write_camus_nifti
from skimage.draw import polygon
from typer.testing import CliRunner

from alan.cli.data import register
from alan.data import open_dataset
from alan.data.summary import summarize


def _cli():
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root():  # keep "data" a sub-command even with a single group
        pass

    return app


def _lv_pixels(coords, shape):
    xs = np.r_[coords[1:, 0], coords[1:, 2][::-1]]
    ys = np.r_[coords[1:, 1], coords[1:, 3][::-1]]
    return len(polygon(np.round(ys), np.round(xs), shape)[0])


def test_echonet_json(echonet_data):
    root, videos = echonet_data
    result = CliRunner().invoke(_cli(), ["data", "inspect", str(root), "--json", "--items"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["format"] == "echonet" and s["items"] == len(videos) and s["skipped"] == {}
    assert s["splits"] == {"train": 1, "val": 1, "test": 1} and s["classes"] == {"A4C": 3}
    assert s["annotated_frames"] == sum(len(v.get("tracings", {})) for v in videos)
    expected = sum(_lv_pixels(c, v["frames"].shape[1:]) for v in videos for c in v.get("tracings", {}).values())
    assert s["mask_pixels"] == {"LV": expected}
    rec = {r["id"]: r for r in s["records"]}
    assert rec["0X1A"] == {"id": "0X1A", "split": "train", "frames": 6, "height": 36, "width": 44,
                           "ed": 1, "es": 4, "label": "A4C"}
    assert rec["0X3C"]["ed"] is None


def test_camus_counts_match_the_written_labels(tmp_path):
    patients = {"patient0001": {"4CH": camus_patient(seed=1), "2CH": camus_patient(n=6, ed=5, es=0)},
                "patient0002": {"4CH": camus_patient(n=4, es=3, seed=3)}}
    root = write_camus_nifti(tmp_path, patients, {"patient0001": "training", "patient0002": "testing"})
    s = summarize(open_dataset(root), items=False)
    assert s["items"] == 3 and s["splits"] == {"test": 1, "train": 2}
    assert s["classes"] == {"A2C": 1, "A4C": 2} and "records" not in s
    gts = [v["gt"] for views in patients.values() for v in views.values()]
    assert s["annotated_frames"] == sum(len(g) for g in gts)  # every half-sequence frame
    assert s["mask_pixels"] == {name: int(sum((g == value).sum() for g in gts))
                                for value, name in ((1, "LV"), (3, "LA"), (2, "MYO"))}


def test_tmed2_skipped_and_table(tmed2_data):
    root, _ = tmed2_data
    result = CliRunner().invoke(_cli(), ["data", "inspect", str(root), "--format", "tmed2", "--items"])
    assert result.exit_code == 0, result.output
    for text in ("tmed2", "A4CorA2CorOther", "101s1_0", "PLAX"):
        assert text in result.stdout
    s = summarize(open_dataset(root))
    assert s["skipped"] == {"view A4CorA2CorOther": 1, "view Not_Provided": 1}
    assert s["annotated_frames"] == 0 and s["mask_pixels"] == {}


def test_decode_checks_frames(acdc_data):
    root, patients = acdc_data
    s = summarize(open_dataset(root), decode=True)
    assert s["decoded_frames"] == sum(p["cine"].shape[2] * p["cine"].shape[3] for p in patients.values())
    assert s["annotated_frames"] == 2 * s["items"]  # ED and ES on every slice


def _alan(*args):
    return subprocess.run([sys.executable, "-m", "alan.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("damage", ["missing video", "empty folder"])
def test_cli_errors_are_one_line(echonet_data, tmp_path, damage):
    root, _ = echonet_data
    if damage == "missing video":
        (root / "Videos" / "0X2B.avi").unlink()
        target, named = root, "0X2B.avi"
    else:
        (tmp_path / "empty").mkdir()
        target, named = tmp_path / "empty", "empty"
    p = _alan("data", "inspect", target, "--json")
    assert p.returncode == 2
    assert named in p.stderr and "Traceback" not in p.stderr + p.stdout
    assert len(p.stderr.strip().splitlines()) == 1 and p.stdout == ""


def test_cli_json_end_to_end(camus_data):
    root, _ = camus_data
    p = _alan("data", "inspect", root, "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["format"] == "camus" and s["items"] == 2 and s["annotated_frames"] == 4


def test_decode_reports_every_problem_and_exits_2(echonet_data):
    root, videos = echonet_data
    from fixtures import write_avi

    write_avi(root / "Videos" / "0X1A.avi", videos[0]["frames"][:2])  # shorter than FileList says
    ok, png = cv2.imencode(".png", videos[2]["frames"][0])
    (root / "Videos" / "0X3C.avi").write_bytes(png.tobytes())  # an image renamed .avi
    s = summarize(open_dataset(root), decode=True)
    assert s["bad_records"] == 2 and len(s["problems"]) == 2
    assert "0X1A.avi: decodes to 2 frames but FileList.csv says 6" in s["problems"][0]
    assert "0X3C.avi: cannot open video" in s["problems"][1]
    assert s["decoded_frames"] == videos[1]["frames"].shape[0]  # the good one
    result = CliRunner().invoke(_cli(), ["data", "inspect", str(root), "--decode", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["problems"] == s["problems"]
    # without --decode nothing is decoded, so nothing is found
    assert "problems" not in summarize(open_dataset(root))


def test_decode_on_a_good_dataset_exits_0(echonet_data):
    root, videos = echonet_data
    result = CliRunner().invoke(_cli(), ["data", "inspect", str(root), "--decode", "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["problems"] == [] and s["bad_records"] == 0
    assert s["decoded_frames"] == sum(v["frames"].shape[0] for v in videos)
