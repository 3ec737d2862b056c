"""`analyze_study`: folders and datasets of recordings, NIfTI label maps, resume, permissions, codec."""

import csv
import json
import os
import stat

import cv2
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from alan.artifacts import MARKER
from alan.phantom import synthesize
from alan.downstream.parcel_to_segment import ParcelToSegment
from alan.models.parcellator import Parcellator
from alan.pipelines.analyze import analyze_study, study_inputs
from alan.pipelines.labelmaps import LABEL_IDS, masks_to_labels, read_label_map, write_label_map


class ThresholdParcellator(Parcellator):
    """Parcels = 1 where the frame is bright, else 0: a Parcellator whose backbone + head is a
    threshold (two logits per pixel), so the batching across records is the real one. `calls`
    counts backbone batches of `batch_size` frames."""

    provenance = {"backbone_hash": "b0", "head_hash": "h0", "work_size": 64}

    def __init__(self, fail_after: int | None = None, batch_size: int = 40):
        super().__init__(None, None, work_size=64, batch_size=batch_size)
        self.calls, self.fail_after = 0, fail_after

    def forward_batch(self, frames, with_cls=True, view_size=None):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # what a kill in the middle of a study looks like to Python
        bright = np.asarray(frames) > 0.4  # work frames are in [0, 1]
        return torch.zeros(len(frames), 1) if with_cls else None, torch.from_numpy(np.stack([~bright, bright], axis=1).astype(np.float32))

    def __call__(self, frames):
        return self.parcels_of_logits(self.forward_batch(frames)[1], (64, 64))


def lv_model():
    maps = np.zeros((4, 64, 64), np.int64)
    maps[:, 20:40, 20:40] = 1
    return {"LV": ParcelToSegment(n_parcels=2).fit(maps, maps == 1, provenance={"backbone_hash": "b0", "head_hash": "h0"})}


def beating(n=40, size=48, period=12):
    """A bright disc whose radius follows a cosine: a clear cycle, ED at the maxima."""
    yy, xx = np.mgrid[:size, :size]
    r = 8 + 5 * np.cos(2 * np.pi * np.arange(n) / period)
    return np.stack([np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= ri ** 2, 200, 20) for ri in r]).astype(np.uint8)


def write_avi(path, frames, fps=25):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, frames.shape[:0:-1], False)
    for f in frames:
        w.write(f)
    w.release()


@pytest.fixture
def video_folder(tmp_path):
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    write_avi(root / "a.avi", beating())
    write_avi(root / "sub" / "b.avi", beating(period=10))
    write_avi(root / "flat.avi", np.full((20, 48, 48), 20, np.uint8) + 0)  # no LV, no cycle
    (root / "broken.avi").write_bytes(b"RIFF\x00\x00not a video at all" * 20)
    return root


def test_folder_with_a_corrupt_video(video_folder, tmp_path):
    items = study_inputs(video_folder)
    res = analyze_study(items, ThresholdParcellator(), lv_model(), tmp_path / "out", progress=False)
    by_id = {r["record"]: r for r in res.rows}
    assert set(by_id) == {"a", "sub/b", "flat", "broken"}
    assert by_id["broken"]["status"] == "failed" and "broken.avi" in by_id["broken"]["warnings"][0]
    assert [r["record"] for r in res.failed] == ["broken"]
    a = by_id["a"]
    assert a["status"] == "ok" and a["es_frames"] == [6, 18, 30] and a["beats"] >= 2 and 0 < a["ef_percent"] < 100
    flat = by_id["flat"]
    assert flat["status"] == "ok" and flat["ef_percent"] is None and "no LV" in flat["warnings"][0]
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [t["record"] for t in table] == [r["record"] for r in res.rows]
    assert {t["record"]: t["status"] for t in table}["broken"] == "failed"
    assert json.loads((tmp_path / "out" / "results.json").read_text())["n_failed"] == 1
    folder = tmp_path / "out" / a["folder"]
    summary = json.loads((folder / "summary.json").read_text())
    labels, _ = read_label_map(folder / "labels.nii.gz")
    np.testing.assert_array_equal((labels == LABEL_IDS["LV"]).sum(axis=(1, 2)), summary["lv_area_px"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert f"src='{a['folder']}/overlay.mp4'" in html and "<video" in html
    assert f"src='{a['folder']}/lv_area.png'" in html and "base64" not in html  # linked: the report stays small


def test_overlay_is_h264_that_opencv_decodes(video_folder, tmp_path):
    items = [r for r in study_inputs(video_folder) if getattr(r, "id", "") == "a"]
    res = analyze_study(items, ThresholdParcellator(), lv_model(), tmp_path / "out", progress=False)
    cap = cv2.VideoCapture(str(tmp_path / "out" / res.rows[0]["folder"] / "overlay.mp4"))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode().lower()
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    cap.release()
    assert fourcc in ("avc1", "h264") and n == 40 and ok and frame.shape[2] == 3


def test_resume_after_a_kill(video_folder, tmp_path):
    items = [r for r in study_inputs(video_folder) if getattr(r, "id", "") in ("a", "sub/b", "flat")]
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        analyze_study(items, ThresholdParcellator(fail_after=1), lv_model(), out, progress=False)
    done = sorted(p.name for p in (out / "records").iterdir())
    assert done == ["a"]  # the interrupted record left nothing behind
    # what a SIGKILL leaves: a temporary sibling whose marker says incomplete, of a process that is gone
    stale = out / "records" / ".sub_b.tmp-dead"
    stale.mkdir()
    (stale / MARKER).write_text(json.dumps({"kind": "analyze-record", "complete": False, "pid": 2**22 + 12345}))
    again = ThresholdParcellator()
    res = analyze_study(items, again, lv_model(), out, resume=True, progress=False)
    assert again.calls == 2 and res.reused == 1 and not stale.exists()
    assert [r["record"] for r in res.rows] == [r.id for r in items] and all(r["status"] == "ok" for r in res.rows)
    # other models: nothing is reused
    other = lv_model()
    other["LV"].interior_ = np.array([True, True])
    res = analyze_study(items, ThresholdParcellator(), other, out, resume=True, progress=False)
    assert res.reused == 0


def test_outputs_follow_the_umask(video_folder, tmp_path):
    items = [r for r in study_inputs(video_folder) if getattr(r, "id", "") == "a"]
    old = os.umask(0o022)
    try:
        analyze_study(items, ThresholdParcellator(), lv_model(), tmp_path / "out", progress=False)
    finally:
        os.umask(old)
    for path in [tmp_path / "out", *(tmp_path / "out").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_dataset_input_and_refused_output(tmp_path):
    echonet = synthesize("echonet", tmp_path / "echonet", seed=3, size="small")
    items = study_inputs(echonet, split="test")
    assert items and all(r.split == "test" for r in items)
    res = analyze_study(items[:2], ThresholdParcellator(), lv_model(), tmp_path / "out", progress=False)
    assert [r["record"] for r in res.rows] == [r.id for r in items[:2]]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    from alan.errors import ArtifactError

    with pytest.raises(ArtifactError, match="not an alan output"):
        analyze_study(items[:1], ThresholdParcellator(), lv_model(), tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_label_map_round_trip_nibabel_and_simpleitk(tmp_path):
    lv = np.zeros((3, 5, 7), bool)
    la = np.zeros((3, 5, 7), bool)
    lv[0, 0, 1] = True  # top row, second column of the first frame
    la[2, 4, 6] = True  # bottom-right of the last frame
    labels = masks_to_labels({"LV": lv, "LA": la})
    path = write_label_map(tmp_path / "case", labels, spacing=(0.3, 0.5))
    assert path.name == "case.nii.gz"
    back, spacing = read_label_map(path)
    np.testing.assert_array_equal(back, labels)
    assert spacing == pytest.approx((0.3, 0.5))
    img = nib.load(str(path))
    assert img.shape == (7, 5, 3) and img.header.get_zooms() == pytest.approx((0.5, 0.3, 1.0))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    s = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(s), labels)
    assert s.GetSpacing() == pytest.approx((0.5, 0.3, 1.0))
    assert s.GetPixel(1, 0, 0) == LABEL_IDS["LV"] and s.GetPixel(6, 4, 2) == LABEL_IDS["LA"]


def test_cycle_warnings():
    from alan.pipelines.analyze import cycle_warnings

    assert cycle_warnings(np.zeros(10), True) == (["no LV found in any frame: no ED/ES, no EF"], False)
    warn, usable = cycle_warnings(np.array([100.0, 101, 100, 102, 100]), True)
    assert not usable and "varies by 2.0%" in warn[0]
    warn, usable = cycle_warnings(np.array([100.0, 150, 100]), False)
    assert usable and "no clear cardiac cycle" in warn[0]
    assert cycle_warnings(np.array([100.0, 150, 100]), True) == ([], True)


@pytest.fixture(scope="module")
def vit_parcellator():
    """A real (random) ViT + RAPTOR head: batch composition reaches the floats."""
    from alan.models.backbones import create_backbone
    from alan.models.raptor import RaptorHead

    torch.manual_seed(0)
    bb = create_backbone("vit_tiny_p8_112").eval()
    return Parcellator(bb, RaptorHead(bb.embed_dim, 8).eval(), work_size=112, batch_size=16)


def _vit_lv(p):
    rng = np.random.default_rng(0)
    work = rng.random((4, 112, 112)).astype(np.float32)
    maps = p(work)
    return {"LV": ParcelToSegment(n_parcels=8).fit(maps, maps < 4, provenance={"backbone_hash": None, "head_hash": None})}


def test_batched_study_equals_record_by_record(vit_parcellator, tmp_path):
    """Recordings of 7, 45 (more than a batch of 16), 12 and 20 frames and a corrupt file between
    them share backbone batches; each record's files are those of `analyze_record` on its own."""
    from alan.pipelines.analyze import analyze_record

    root = tmp_path / "videos"
    root.mkdir()
    for name, n, period in (("a1", 7, 5), ("a2", 45, 12), ("a4", 12, 8), ("a5", 20, 10)):
        write_avi(root / f"{name}.avi", beating(n=n, period=period))
    (root / "a3.avi").write_bytes(b"RIFF\x00\x00not a video at all" * 20)
    p, lv = vit_parcellator, _vit_lv(vit_parcellator)
    calls = []
    forward = p.backbone.forward

    def counted(x, *size):
        calls.append(len(x))
        return forward(x, *size)

    p.backbone.forward = counted
    try:
        items = study_inputs(root)
        res = analyze_study(items, p, lv, tmp_path / "out", progress=False)
        assert calls == [16] * 5 + [4]  # 84 frames; record by record would be 7 passes
        assert [(r["record"], r["status"]) for r in res.rows] == [("a1", "ok"), ("a2", "ok"), ("a3", "failed"),
                                                                ("a4", "ok"), ("a5", "ok")]
        solo = {}
        for item in items:
            if getattr(item, "id", None) in ("a1", "a2", "a4", "a5"):
                solo[item.id] = analyze_record(item, p, lv, tmp_path / "solo" / item.id)

        def check(out):
            for rid, want in solo.items():
                folder = out / "records" / rid
                got = json.loads((folder / "summary.json").read_text())
                assert got.keys() == want.keys()
                np.testing.assert_allclose(got["lv_area_px"], want["lv_area_px"], rtol=1e-3)
                assert {k: got[k] for k in ("frames", "ed_frames", "es_frames", "warnings", "provenance")} == \
                       {k: want[k] for k in ("frames", "ed_frames", "es_frames", "warnings", "provenance")}
                assert (got["ef_percent"] is None) == (want["ef_percent"] is None)
                if got["ef_percent"] is not None:
                    assert got["ef_percent"] == pytest.approx(want["ef_percent"], abs=0.1)
                labels, _ = read_label_map(folder / "labels.nii.gz")
                labels0, _ = read_label_map(tmp_path / "solo" / rid / "labels.nii.gz")
                assert labels.shape == labels0.shape and (labels != labels0).mean() < 1e-3
                assert (folder / "overlay.mp4").stat().st_size > 0 and (folder / "lv_area.png").stat().st_size > 0

        check(tmp_path / "out")
        # resume: the folder of the longest record is gone; only it runs again, alone in its batches
        import shutil

        shutil.rmtree(tmp_path / "out" / "records" / "a2")
        calls.clear()
        res = analyze_study(study_inputs(root), p, lv, tmp_path / "out", resume=True, progress=False)
        assert res.reused == 3 and calls == [16, 16, 13]
        assert [r["status"] for r in res.rows] == ["ok", "ok", "failed", "ok", "ok"]
        check(tmp_path / "out")
    finally:
        p.backbone.forward = forward


def test_study_memory_is_bounded(tmp_path):
    """Recordings are decoded one ahead of the backbone and written soon after: while the backbone
    runs, only a few recordings are decoded and not yet written, whatever the study's length."""
    from alan.records import Record

    out = tmp_path / "out"
    decoded = []

    def loader(i):
        def load():
            decoded.append(i)
            return beating(n=10)
        return load

    items = [Record(id=f"r{i}", load_frames=loader(i), n_frames=10, meta={"FPS": 25}) for i in range(12)]
    in_flight = []

    class Watched(ThresholdParcellator):
        def forward_batch(self, frames, with_cls=True, view_size=None):
            written = [d for d in (out / "records").iterdir() if not d.name.startswith(".")] if (out / "records").exists() else []
            in_flight.append(len(decoded) - len(written))
            return super().forward_batch(frames, with_cls, view_size)

    res = analyze_study(items, Watched(batch_size=10), lv_model(), out, progress=False)
    assert len(res.rows) == 12 and all(r["status"] == "ok" for r in res.rows) and len(in_flight) == 12
    assert max(in_flight) <= 5  # the record in the batch, one decoded ahead, the writer's queue and the one it writes


def test_timings_name_every_stage(video_folder, tmp_path):
    items = [r for r in study_inputs(video_folder) if getattr(r, "id", "") == "a"]
    res = analyze_study(items, ThresholdParcellator(), lv_model(), tmp_path / "out", progress=False)
    t = res.timings.as_dict()
    assert {"decode", "backbone + head", "parcels", "masks", "summary", "nifti", "overlay draw",
            "overlay encode (H.264)", "plot", "summary json"} <= set(t)
    assert all(v["wall_s"] >= 0 for v in t.values()) and t["overlay encode (H.264)"]["cpu_s"] > 0  # ffmpeg's CPU


def test_area_plot_reuses_its_figure_without_leaking_state(tmp_path):
    from alan.pipelines.analyze import area_plot

    a = 100 + 40 * np.cos(np.arange(30) / 3)
    area_plot(a, [0, 19], [9], tmp_path / "a.png", title="one")
    area_plot(np.linspace(5, 9000, 50), [], [49], tmp_path / "b.png", title="two", unit="mm2")
    area_plot(a, [0, 19], [9], tmp_path / "c.png", title="one")
    first, other, again = (cv2.imread(str(tmp_path / f"{n}.png")) for n in "abc")
    assert first is not None and first.shape == (286, 660, 3)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@pytest.mark.parametrize("features", ["cls", "grid"])
def test_views_are_scored_on_the_banks_features_at_its_input_size(vit_parcellator, tmp_path, features):
    """A bank fitted at 128 px (the backbone's own size: 112): analyze, record by record and batched,
    scores the recording's frames at 128, as `fit_views` takes them, not at the backbone's size."""
    from alan.data import open_dataset
    from alan.models.backbones import view_features
    from alan.pipelines.analyze import analyze_record
    from alan.pipelines.views import fit_views
    from alan.transforms.spatial import to_work

    p, lv = vit_parcellator, _vit_lv(vit_parcellator)
    tmed2 = open_dataset(synthesize("tmed2", tmp_path / "tmed2", seed=5, size="small"))
    knn = fit_views(p.backbone, tmed2.split("train"), k=5, features=features, input_size=128)
    (tmp_path / "videos").mkdir()
    write_avi(tmp_path / "videos" / "a.avi", beating(n=40, size=112))  # at the work size: no resize before 128
    items = study_inputs(tmp_path / "videos")
    frames = np.asarray(items[0].frames)

    def scores(size):  # the bank's own features of the recording's frames, as `fit_views` makes them
        with torch.no_grad():
            feats = view_features(*p.backbone(torch.from_numpy(to_work(list(frames), size)), size), features)
        return knn.predict_proba(feats.numpy()[::max(1, len(frames) // 16)]).mean(axis=0)

    want = scores(128)
    assert not np.allclose(want, scores(112), atol=1e-3)  # the size shows in the scores
    solo = analyze_record(items[0], p, lv, tmp_path / "solo", knn=knn)
    batched = analyze_study(items, p, lv, tmp_path / "out", knn=knn, progress=False)
    study = json.loads((tmp_path / "out" / batched.rows[0]["folder"] / "summary.json").read_text())
    for s in (solo, study):
        np.testing.assert_allclose([s["view_scores"][str(c)] for c in knn.classes_], want, atol=1e-4)
        assert s["view"] == str(knn.classes_[int(np.argmax(want))])
