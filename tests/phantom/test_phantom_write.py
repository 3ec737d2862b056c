"""Phantom writers: the real readers read back exactly what was generated; determinism; safety."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.draw import polygon

from alan.data import open_dataset
from alan.phantom import generate, read_manifest, synthesize
from alan.phantom.shapes import biplane_volume
from alan.errors import DataError


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every format written once at size small, seed 3 (ACDC with the broken-shortcut test set)."""
    base = tmp_path_factory.mktemp("phantoms")
    opts = {"echonet": {}, "camus": {}, "camus2019": {"release": "2019"}, "tmed2": {},
            "acdc": {"spurious": True, "broken_test": True}}
    out = {}
    for name, o in opts.items():
        fmt = "camus" if name.startswith("camus") else name
        out[name] = synthesize(fmt, base / name, seed=3, size="small", workers=1, **o)
    return out


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, written):
    for fmt, opts in (("tmed2", {}), ("acdc", {"spurious": True, "broken_test": True}), ("echonet", {})):
        again = synthesize(fmt, tmp_path / fmt, seed=3, size="small", workers=2, **opts)
        assert _digest(again) == _digest(written[fmt])
    other = synthesize("tmed2", tmp_path / "other", seed=4, size="small")
    assert _digest(other) != _digest(written["tmed2"])


def test_refuses_non_empty_out_and_force_replaces_only_a_phantom(tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    with pytest.raises(DataError, match="not empty"):
        synthesize("tmed2", out, size="small")
    with pytest.raises(DataError, match="not an alan output"):
        synthesize("tmed2", out, size="small", force=True)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"] and (out / "mine.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    again = tmp_path / "again"
    synthesize("tmed2", again, size="small", seed=1)
    synthesize("tmed2", again, size="small", seed=2, force=True)
    assert read_manifest(again)["seed"] == 2
    # An empty folder is fine without --force.
    empty = tmp_path / "empty"
    empty.mkdir()
    synthesize("tmed2", empty, size="small")
    assert read_manifest(empty)["format"] == "tmed2"


def test_failure_leaves_nothing_behind(tmp_path):
    def boom(done, total):
        if done == 2:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        synthesize("tmed2", tmp_path / "new", size="small", progress=boom, workers=1)
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "old"
    synthesize("tmed2", old, size="small", seed=1)
    before = _digest(old)
    with pytest.raises(RuntimeError):
        synthesize("tmed2", old, size="small", seed=2, force=True, progress=boom, workers=1)
    assert _digest(old) == before and [p.name for p in tmp_path.iterdir()] == ["old"]


def test_manifest_records_settings(written):
    m = read_manifest(written["acdc"])
    assert (m["format"], m["seed"], m["size"]) == ("acdc", 3, "small")
    assert m["options"]["spurious"] is True and m["options"]["broken_test"] is True
    assert len(m["records"]) == 15
    # Info.cfg stays standard: the generator settings live only in phantom.json.
    cfg = (written["acdc"] / "training" / "patient001" / "Info.cfg").read_text()
    assert sorted(line.split(":")[0] for line in cfg.splitlines()) == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]


# ------------------------------------------------------------------------------ EchoNet


def test_echonet_round_trip(written):
    root = written["echonet"]
    truth = generate("echonet", seed=3, size="small")
    ds = open_dataset(root)
    assert ds.format == "echonet" and len(ds) == len(truth)
    fl = pd.read_csv(root / "FileList.csv")
    assert list(fl.columns) == ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"]
    assert set(fl["Split"]) <= {"TRAIN", "VAL", "TEST"}
    vt = pd.read_csv(root / "VolumeTracings.csv")
    assert list(vt.columns) == ["FileName", "X1", "Y1", "X2", "Y2", "Frame"] and vt["FileName"].str.endswith(".avi").all()
    by_id = {r.id: r for r in ds}
    es_first = 0
    for t in truth:
        seq, rec = t["seq"], by_id[t["name"]]
        np.testing.assert_array_equal(rec.frames, seq.frames)  # FFV1 is lossless
        assert (rec.ed, rec.es) == (seq.ed, seq.es)
        assert rec.split == t["split"].lower()
        assert rec.meta["EF"] == pytest.approx(seq.ef, abs=1e-6)
        assert rec.meta["EDV"] == pytest.approx(seq.edv, abs=1e-6)
        masks = rec.masks
        for f in (seq.ed, seq.es):
            assert _dice(masks[f]["LV"], seq.mask("LV")[f]) >= 0.95
        rows = vt[vt["FileName"] == f"{t['name']}.avi"]
        assert len(rows) == 42
        es_first += int(rows["Frame"].iloc[0] == seq.es)
    assert es_first == sum(t["es_rows_first"] for t in truth) > 0


def test_echonet_mjpg_codec_is_close(tmp_path):
    root = synthesize("echonet", tmp_path / "mjpg", seed=3, size="small", codec="MJPG")
    truth = generate("echonet", seed=3, size="small")
    rec = {r.id: r for r in open_dataset(root)}[truth[0]["name"]]
    err = np.abs(rec.frames.astype(int) - truth[0]["seq"].frames.astype(int))
    assert err.mean() < 8


# ------------------------------------------------------------------------------ CAMUS


@pytest.mark.parametrize("name", ["camus", "camus2019"])
def test_camus_round_trip(written, name):
    root = written[name]
    truth = generate("camus", seed=3, size="small")
    ds = open_dataset(root)
    assert ds.format == "camus" and len(ds) == 2 * len(truth)
    by_id = {r.id: r for r in ds}
    for t in truth:
        for view, v in t["views"].items():
            rec, seq = by_id[f"{t['id']}_{view}"], v["seq"]
            assert rec.label == ("A2C" if view == "2CH" else "A4C")
            np.testing.assert_array_equal(rec.frames, seq.frames)
            assert (rec.ed, rec.es) == (v["ed"], v["es"])
            assert rec.spacing == pytest.approx((seq.spacing_mm, seq.spacing_mm), rel=1e-6)
            has_gt = name == "camus" or t["split"] != "test"
            if not has_gt:
                assert rec.masks == {} and "LVef" not in rec.meta
                continue
            masks = rec.masks
            frames = range(len(seq.frames)) if name == "camus" else (v["ed"], v["es"])
            assert set(masks) == set(frames)
            for f in frames:
                for label in ("LV", "MYO", "LA"):
                    np.testing.assert_array_equal(masks[f][label], seq.mask(label)[f])
            ef_key = "EF" if name == "camus" else "LVef"
            assert rec.meta[ef_key] == pytest.approx(t["ef"], abs=0.05)
        if name == "camus":
            assert by_id[f"{t['id']}_4CH"].split == t["split"]


def test_camus_half_sequences_run_ed_to_es_or_es_to_ed():
    from alan.phantom.write import camus_patient

    orders = []
    for k in range(12):
        for v in camus_patient(np.random.default_rng(k), (64, 64))["views"].values():
            seq, n = v["seq"], len(v["seq"].frames)
            assert {v["ed"], v["es"]} == {0, n - 1}
            assert seq.contraction[v["ed"]] == pytest.approx(0) and seq.contraction[v["es"]] == pytest.approx(1)
            lv = seq.mask("LV").sum(axis=(1, 2))
            assert lv[v["ed"]] == lv.max() and lv[v["es"]] == lv.min()
            orders.append(v["es"] < v["ed"])
    assert 0 < sum(orders) < len(orders)  # some sequences start at ES (mid-cycle), most at ED


def test_camus_ef_is_biplane_simpson_of_both_views():
    """Restate biplane Simpson from the 2CH/4CH chords (mm) and compare with the cfg value."""
    from alan.phantom.echo import lv_disks

    for t in generate("camus", seed=3, size="small"):
        vols = []
        for c in (0.0, 1.0):
            parts = []
            for view, camus_view in (("A2C", "2CH"), ("A4C", "4CH")):
                seq = t["views"][camus_view]["seq"]
                ch, _, _, length = lv_disks(seq.meta["patient"], view, c, seq.meta["pose"], seq.frames.shape[1:])
                parts.append((ch * seq.spacing_mm, length * seq.spacing_mm))
            (a, la), (b, lb) = parts
            da = np.hypot(a[:, 0] - a[:, 2], a[:, 1] - a[:, 3])
            db = np.hypot(b[:, 0] - b[:, 2], b[:, 1] - b[:, 3])
            vols.append(np.sum(np.pi / 4 * da * db) * max(la, lb) / 20 / 1000)
            assert vols[-1] == pytest.approx(biplane_volume(a, b, max(la, lb)) / 1000)
        assert t["ef"] == pytest.approx(100 * (vols[0] - vols[1]) / vols[0], rel=1e-9)
        assert abs(t["ef"] - 100 * t["patient"].ef_target) < 6


# ------------------------------------------------------------------------------ TMED-2


def test_tmed2_round_trip(written):
    root = written["tmed2"]
    truth = generate("tmed2", seed=3, size="small")
    ds = open_dataset(root)
    assert ds.format == "tmed2"
    skipped = [t for t in truth if t["view_label"] not in ("PLAX", "PSAX", "A4C", "A2C")]
    assert len(ds) == len(truth) - len(skipped)
    assert sum(ds.skipped.values()) == len(skipped)
    by_key = {r.meta["query_key"]: r for r in ds}
    for t in truth:
        if t in skipped:
            continue
        rec = by_key[t["query_key"]]
        np.testing.assert_array_equal(rec.frames[0], t["frame"])
        assert rec.label == t["view_label"] and rec.split == t["splits"][0]
        assert rec.patient == t["query_key"].split("_")[0]
        assert rec.meta["diagnosis"] == t["diagnosis_label"]
    labels = pd.read_csv(root / "labels_per_image.csv")
    assert list(labels.columns) == ["query_key", "view_label", "diagnosis_label"] and len(labels) == len(truth)
    for f in range(3):
        fold = pd.read_csv(root / "DEV479" / f"TMED2_fold{f}_labeledpart.csv")
        assert {"query_key", "SourceFolder", "view_label", "diagnosis_label", "view_classifier_split"} <= set(fold.columns)
        assert set(fold["view_classifier_split"]) == {"train", "val", "test"}
        # Study-level split: all images of a study share it.
        assert fold.groupby(fold["query_key"].str.split("_").str[0])["view_classifier_split"].nunique().max() == 1
    assert open_dataset(root).classes().keys() == {"PLAX", "PSAX", "A4C", "A2C"}


# ------------------------------------------------------------------------------ ACDC


def test_acdc_round_trip(written):
    root = written["acdc"]
    truth = generate("acdc", seed=3, size="small", spurious=True, broken_test=True)
    ds = open_dataset(root)
    assert ds.format == "acdc"
    by_id = {r.id: r for r in ds}
    n_slices = truth[0]["cine"].image.shape[0]
    assert len(ds) == len(truth) * n_slices
    for t in truth:
        c = t["cine"]
        for z in range(n_slices):
            rec = by_id[f"{t['id']}_s{z:02d}"]
            assert rec.label == t["group"] and rec.split == t["split"]
            assert (rec.ed, rec.es) == (c.ed, c.es)
            frames = rec.frames
            assert frames.dtype == np.int16
            np.testing.assert_array_equal(frames, c.image[z])
            assert rec.spacing == pytest.approx(c.spacing[:2], rel=1e-6)
            masks = rec.masks
            for f in (c.ed, c.es):
                for label in ("RV", "MYO", "LV"):
                    np.testing.assert_array_equal(masks[f][label], c.mask(label)[z, f])
    # The ground-truth files match the 4-D file at ED/ES, as in ACDC.
    import nibabel as nib

    pdir = root / "training" / "patient001"
    cfg = dict(line.split(": ") for line in (pdir / "Info.cfg").read_text().splitlines())
    cine = np.asarray(nib.load(pdir / "patient001_4d.nii.gz").dataobj)
    ed_img = np.asarray(nib.load(pdir / f"patient001_frame{int(cfg['ED']):02d}.nii.gz").dataobj)
    np.testing.assert_array_equal(cine[..., int(cfg["ED"]) - 1], ed_img)
    assert nib.load(pdir / "patient001_4d.nii.gz").header.get_zooms()[2] in (8.0, 10.0)


def test_acdc_spurious_shortcut_in_training_broken_in_testing(tmp_path):
    m = read_manifest(synthesize("acdc", tmp_path / "a", seed=0, size="small", spurious=True, broken_test=True,
                                 spurious_p=1.0, workers=1))
    train = [r for r in m["records"] if r["split"] == "train"]
    test = [r for r in m["records"] if r["split"] == "test"]
    assert all(r["spurious"]["in_class"] and r["spurious"]["mode"] == "train" for r in train)
    assert all(r["spurious"]["mode"] == "broken" for r in test)
    plain = read_manifest(synthesize("acdc", tmp_path / "b", seed=0, size="small", workers=1))
    assert all(r["spurious"] is None for r in plain["records"])
    kept = read_manifest(synthesize("acdc", tmp_path / "c", seed=0, size="small", spurious=True, workers=1))
    assert all(r["spurious"]["mode"] == "train" for r in kept["records"])
    with pytest.raises(ValueError):
        synthesize("acdc", tmp_path / "d", size="small", broken_test=True)


def test_unknown_format_or_size(tmp_path):
    with pytest.raises(ValueError):
        synthesize("kaggle", tmp_path / "x")
    with pytest.raises(ValueError):
        synthesize("acdc", tmp_path / "x", size="huge")
    assert not (tmp_path / "x").exists()


def test_echonet_tracings_csv_reproduce_generator_masks(written):
    """The CSV rows, through the reference rule restated here, give the phantom LV."""
    vt = pd.read_csv(written["echonet"] / "VolumeTracings.csv")
    t = generate("echonet", seed=3, size="small")[0]
    seq = t["seq"]
    for f in (seq.ed, seq.es):
        rows = vt[(vt["FileName"] == f"{t['name']}.avi") & (vt["Frame"] == f)][["X1", "Y1", "X2", "Y2"]].to_numpy()
        x = np.concatenate([rows[1:, 0], rows[1:, 2][::-1]])
        y = np.concatenate([rows[1:, 1], rows[1:, 3][::-1]])
        rr, cc = polygon(np.rint(y).astype(int), np.rint(x).astype(int), seq.frames.shape[1:])
        m = np.zeros(seq.frames.shape[1:], bool)
        m[rr, cc] = True
        assert _dice(m, seq.mask("LV")[f]) >= 0.95
    assert json.loads((written["echonet"] / "phantom.json").read_text())["format"] == "echonet"
