import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alan.models.backbones import create_backbone, save_backbone
from alan.models.raptor import RaptorHead, save_head
from alan.pipelines import parcels as P
from alan.records import Record
from alan.reports.overlays import boundary_overlay, save_overlay_mp4, save_overlay_png


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    bb = create_backbone("vit_tiny_p8_112").eval()
    head = RaptorHead(bb.embed_dim, 12).eval()
    return bb, head


def test_compute_parcels_is_argmax_of_upsampled_logits_at_input_size(model, monkeypatch):
    bb, head = model
    frames = np.random.default_rng(0).integers(0, 256, (5, 40, 56), dtype=np.uint8)
    got = P.compute_parcels(bb, head, frames, batch_size=2)
    with torch.no_grad():
        _, tokens = bb(frames)
        expected = head.parcels(tokens, (40, 56)).numpy()
    assert got.shape == (5, 40, 56) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    import alan.models.parcellator as parcellator

    monkeypatch.setattr(parcellator, "CHUNK_ELEMENTS", 12 * 40 * 56 * 2)  # 2 frames per upsampling chunk
    np.testing.assert_array_equal(P.compute_parcels(bb, head, frames, batch_size=3), expected)


def test_mr_intensities_are_scaled_not_wrapped(model):
    bb, head = model
    mr = (np.random.default_rng(1).random((2, 24, 24)) * 4000).astype(np.uint16)
    as_unit = (mr - np.percentile(mr, 0.5)) / (np.percentile(mr, 99.5) - np.percentile(mr, 0.5))
    np.testing.assert_array_equal(P.compute_parcels(bb, head, mr),
                                  P.compute_parcels(bb, head, np.clip(as_unit, 0, 1).astype(np.float32)))


@pytest.mark.parametrize("as_", ["npz", "nifti"])
def test_write_and_read_parcels(tmp_path, as_):
    arr = np.random.default_rng(2).integers(0, 300, (3, 7, 9)).astype(np.uint16)
    path = P.write_parcels(tmp_path / "rec", arr, "rec/01", 300, "hhh", "bbb", as_=as_, spacing=(0.5, 0.25))
    back, info = P.read_parcels(path)
    np.testing.assert_array_equal(back, arr)
    assert back.dtype == np.uint16
    assert info == {"record_id": "rec/01", "K": 300, "head_hash": "hhh", "backbone_hash": "bbb", **(
        {"axes": "x=column, y=row, t"} if as_ == "nifti" else {})}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    if as_ == "nifti":
        import nibabel as nib

        img = nib.load(str(path))
        assert img.shape == (9, 7, 3) and np.allclose(img.header.get_zooms()[:2], (0.25, 0.5))
    assert P.parcel_dtype(256) == np.uint8 and P.parcel_dtype(257) == np.uint16


def test_boundary_overlay_marks_exactly_the_parcel_borders_and_the_mask():
    frame = np.full((6, 8), 100, np.uint8)
    lab = np.zeros((6, 8), np.uint8)
    lab[:, 4:] = 1
    mask = np.zeros((6, 8), bool)
    mask[2:4, 1:3] = True
    rgb = boundary_overlay(frame, lab, mask)
    blue = np.all(rgb == (0, 90, 255), axis=-1)
    green = np.all(rgb == (0, 230, 0), axis=-1)
    expected_blue = np.zeros((6, 8), bool)
    expected_blue[:, 3:5] = True  # both sides of the border (mode "inner")
    np.testing.assert_array_equal(blue, expected_blue)
    assert green[2:4, 1:3].all() and green.sum() == 4  # a 2x2 mask is all boundary
    assert np.all(rgb[~blue & ~green] == 100)
    assert boundary_overlay(frame, lab, scale=3).shape == (18, 24, 3)


def test_overlay_files(tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (6, 20, 30), dtype=np.uint8)
    lab = rng.integers(0, 3, (6, 20, 30)).astype(np.uint8)
    png = save_overlay_png(tmp_path / "a.png", frames[:2], lab[:2], titles=["ED", "ES"])
    img = cv2.imread(str(png))
    assert img.shape[1] == 2 * 30 * 13 + 4 and img.shape[0] == 20 * 13 + 22
    masks = [None] * 5 + [{"LV": lab[5] == 1}]
    mp4 = save_overlay_mp4(tmp_path / "a.mp4", frames, lab, fps=10, masks=masks)
    cap = cv2.VideoCapture(str(mp4))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    cap.release()
    assert n == 6 and ok and first.shape[:2] == (20 * 13, 30 * 13)


def test_run_parcels_writes_maps_and_overlays(model, tmp_path):
    bb, head = model
    rng = np.random.default_rng(4)
    vids = {f"p/{i}": rng.integers(0, 256, (4, 30, 30), dtype=np.uint8) for i in range(2)}
    mask = np.zeros((30, 30), bool)
    mask[10:20, 10:20] = True
    records = [Record(rid, load_frames=(lambda v=v: v), n_frames=4, annotated=(1,),
                      load_masks=lambda: {1: {"LV": mask}}) for rid, v in vids.items()]
    run = P.run_parcels(records, bb, head, tmp_path, overlay="both", progress=False)
    assert [p.name for p in run.maps] == ["p_0.npz", "p_1.npz"]
    assert sorted(p.name for p in run.overlays) == ["p_0.mp4", "p_0.png", "p_1.mp4", "p_1.png"]
    arr, info = P.read_parcels(run.maps[1])
    np.testing.assert_array_equal(arr, P.compute_parcels(bb, head, vids["p/1"]))
    assert info["record_id"] == "p/1" and info["K"] == 12
    assert all(1 <= n <= 12 for n in run.parcels_per_frame)


def _write_avi(path, frames):
    h, w = frames.shape[1:]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()


def test_cli_train_then_parcels_and_hash_check(tmp_path):
    from alan.cli.main import app

    torch.manual_seed(0)
    bb = create_backbone("vit_tiny_p8_112")
    save_backbone(bb, tmp_path / "bb")
    other = create_backbone("vit_tiny_p8_112")
    save_backbone(other, tmp_path / "other")
    vids = tmp_path / "videos"
    vids.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        _write_avi(vids / f"v{i}.avi", rng.integers(0, 256, (20, 48, 48), dtype=np.uint8))
    runner = CliRunner()
    res = runner.invoke(app, ["raptor", "train", "--backbone", str(tmp_path / "bb"), "--data", str(vids),
                              "--split", "all", "--k", "6", "--out", str(tmp_path / "run"), "--max-steps", "2",
                              "--batch-size", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "run" / "head" / "config.json").read_text())
    assert cfg["kind"] == "raptor_head" and cfg["backbone_hash"] == bb.hash and cfg["n_parcels"] == 6
    assert cfg["loss"]["preset"] == "reference" and cfg["training"]["clip_length"] == 16
    res = runner.invoke(app, ["parcels", str(vids / "v1.avi"), "--backbone", str(tmp_path / "bb"), "--head",
                              str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert res.exit_code == 0, res.output
    arr, info = P.read_parcels(tmp_path / "out" / "maps" / "v1.npz")
    assert arr.shape == (20, 48, 48) and info["backbone_hash"] == bb.hash and info["head_hash"] == cfg["hash"]
    assert (tmp_path / "out" / "overlays" / "v1.png").is_file()
    from alan.errors import ArtifactError

    res = runner.invoke(app, ["parcels", str(vids), "--backbone", str(tmp_path / "other"), "--head",
                              str(tmp_path / "run"), "--out", str(tmp_path / "out2")])
    assert isinstance(res.exception, ArtifactError) and "trained on backbone" in str(res.exception)


# ---------------------------------------------------------------- no half-written output
def _records(n, bad_last=False):
    rng = np.random.default_rng(6)
    out = [Record(f"r{i}", load_frames=(lambda v=rng.integers(0, 256, (3, 24, 24), dtype=np.uint8): v), n_frames=3)
           for i in range(n)]
    if bad_last:
        from alan.errors import DataError

        def broken():
            raise DataError("r_bad.avi", "decodes to 1 frames but its container says 3 (truncated or corrupt)")
        out.append(Record("r_bad", load_frames=broken, n_frames=3))
    return out


def test_a_bad_last_video_leaves_no_maps(model, tmp_path):
    from alan.errors import DataError

    bb, head = model
    with pytest.raises(DataError, match="r_bad.avi"):
        P.run_parcels(_records(2, bad_last=True), bb, head, tmp_path / "out", overlay="none", progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the maps of the good records nor a temporary


def test_rerun_replaces_an_earlier_parcels_output_but_nothing_else(model, tmp_path):
    from alan.errors import ArtifactError

    bb, head = model
    out = tmp_path / "out"
    P.run_parcels(_records(2), bb, head, out, overlay="none", progress=False)
    run = P.run_parcels(_records(1), bb, head, out, overlay="none", progress=False)
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["r0.npz"] and run.maps == [out / "maps" / "r0.npz"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not an alan output"):
        P.run_parcels(_records(1), bb, head, tmp_path / "mine", overlay="none", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


_KILLED_RUN = """
import os, signal, sys
import numpy as np, torch
from alan.models.backbones import create_backbone
from alan.models.raptor import RaptorHead
from alan.pipelines.parcels import run_parcels
from alan.records import Record

torch.manual_seed(0)
bb = create_backbone("vit_tiny_p8_112").eval()
head = RaptorHead(bb.embed_dim, 12).eval()
frames = np.zeros((3, 24, 24), np.uint8)
def third():
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the run, after two maps
records = [Record("a", load_frames=lambda: frames), Record("b", load_frames=lambda: frames),
           Record("c", load_frames=third)]
run_parcels(records, bb, head, sys.argv[1], overlay="none", progress=False)
"""


def test_killed_run_leaves_no_visible_output_and_a_rerun_cleans_up(model, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr
    assert not out.exists()
    (stale,) = tmp_path.iterdir()  # the killed run's hidden temporary, marked incomplete
    assert stale.name.startswith(".out.tmp-")
    assert json.loads((stale / ".alan-output.json").read_text())["complete"] is False
    assert len(list((stale / "maps").glob("*.npz"))) == 2
    bb, head = model
    P.run_parcels(_records(2), bb, head, out, overlay="none", progress=False)
    assert [q.name for q in tmp_path.iterdir()] == ["out"]  # the stale temporary is gone
    assert json.loads((out / ".alan-output.json").read_text()) == {"kind": "parcels", "complete": True}


_FSIZE_LIMITED = """
import resource, sys
import numpy as np
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from alan.errors import AlanError
from alan.pipelines.parcels import write_parcels
arr = np.random.default_rng(0).integers(0, 200, (20, 64, 64)).astype(np.uint8)  # compresses to > 4 kB
try:
    write_parcels(sys.argv[1], arr, "r", 200, "h", "b", as_=sys.argv[2])
except AlanError as e:
    print(e)
    sys.exit(2)
"""


@pytest.mark.parametrize("as_", ["npz", "nifti"])
def test_a_write_that_fails_part_way_raises_and_leaves_nothing(tmp_path, as_):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", _FSIZE_LIMITED, str(tmp_path / "r"), as_], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "writing the parcel map failed (File too large)" in p.stdout and "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []
