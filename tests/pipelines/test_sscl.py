"""SSCL grid: patient-level splits without leakage, aggregation, and a tiny grid end to end."""

import json

import numpy as np
import pytest
import torch

from alan.downstream.classifier import EDESClassifier
from alan.errors import DataError
from alan.models.encoders import _build_trunk
from alan.pipelines import sscl
from alan.pipelines.sscl import (GridConfig, aggregate, format_tables, match_imagenet_weights, patient_split,
                                 run_grid, summary_json)
from alan.records import Record
from alan.training import RunOptions

CLASSES = ("DCM", "HCM", "NOR")


def synthetic_cmr(n_per_class=6, slices=2, size=40, split="train", spurious=None, seed=0):
    """Records like the ACDC reader's: one per (patient, slice); class = LV size and wall thickness.

    `spurious`: "aligned" puts a bright corner square whose position follows the class,
    "broken" puts it at random positions (the shortcut no longer holds)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    records = []
    for k, cls in enumerate(CLASSES):
        for p in range(n_per_class):
            pid = f"{split}{cls}{p:03d}"
            r_lv = {"DCM": 9.0, "HCM": 4.5, "NOR": 6.5}[cls] + rng.normal(0, 0.5)
            wall = {"DCM": 1.5, "HCM": 4.0, "NOR": 2.5}[cls] + rng.normal(0, 0.3)
            corner = k if spurious == "aligned" else int(rng.integers(0, 3))
            for s in range(slices):
                frames, masks = [], {}
                for t, squeeze in enumerate((1.0, 0.9, 0.75, 0.9)):
                    r = r_lv * squeeze * (1 - 0.1 * s)
                    d = np.hypot(yy - c, xx - c)
                    lv, myo = d < r, (d >= r) & (d < r + wall)
                    rv = (np.hypot(yy - c, xx - c - r - wall - 3) < 4) & ~lv & ~myo
                    img = 80 + 20 * rng.standard_normal((size, size))
                    img[lv], img[myo], img[rv] = 400, 150, 350
                    if spurious:
                        img[2:8, 2 + 10 * corner:8 + 10 * corner] = 900
                    frames.append(img.astype(np.int16))
                    if t in (0, 2):
                        masks[t] = {"LV": lv, "MYO": myo, "RV": rv}
                cine = np.stack(frames)
                records.append(Record(id=f"{pid}_s{s:02d}", load_frames=lambda cine=cine: cine, n_frames=4,
                                      height=size, width=size, load_masks=lambda m=masks: m, annotated=(0, 2), ed=0,
                                      es=2, label=cls, split=split, patient=pid))
    return records


def test_patient_split_is_stratified_and_leak_free():
    recs = synthetic_cmr(n_per_class=10, slices=3)
    patients = np.array([r.patient for r in recs])
    labels = np.array([r.label for r in recs])
    seen_test = set()
    for seed in range(5):
        tr, te = patient_split(patients, labels, 0.3, seed)
        assert len(tr) + len(te) == len(recs)
        assert not set(patients[tr]) & set(patients[te])
        for cls in CLASSES:  # 3 of 10 patients per class in the test part
            assert len(set(patients[te][labels[te] == cls])) == 3
        seen_test |= set(patients[te])
    assert len(seen_test) > 9  # different seeds, different splits


def test_patient_split_refuses_inconsistent_labels():
    with pytest.raises(Exception, match="different labels"):
        patient_split(["a", "a", "b", "b"], ["x", "y", "x", "x"])


def test_aggregate_means_slice_probabilities_per_patient():
    proba = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    y, p = aggregate(proba, np.array(["a", "a", "b"]), np.array(["p1", "p1", "p2"]), "patient")
    assert list(y) == ["a", "b"]
    np.testing.assert_allclose(p, [[0.7, 0.3], [0.2, 0.8]])
    y2, p2 = aggregate(proba, np.array(["a", "a", "b"]), np.array(["p1", "p1", "p2"]), "slice")
    assert p2 is proba and len(y2) == 3


class _Spy:
    """Records the patients every classifier fit sees."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = EDESClassifier.fit_features

        def spy(clf, features, y, groups=None, eval_set=None):
            self.calls.append(set(np.asarray(groups)))
            return original(clf, features, y, groups, eval_set)

        monkeypatch.setattr(EDESClassifier, "fit_features", spy)


def test_tiny_grid_end_to_end(tmp_path, monkeypatch):
    torch.manual_seed(0)
    records = synthetic_cmr(n_per_class=5, slices=2, spurious="aligned") + \
        synthetic_cmr(n_per_class=2, slices=2, split="test", spurious="broken", seed=1)
    # an "ImageNet" file for the tiny VGG (3-channel trunk, random weights): the loading path, not ImageNet
    weights = tmp_path / "vgg_tiny_imagenet.pth"
    torch.save(_build_trunk("vgg_tiny", 3).state_dict(), weights)
    cfg = GridConfig.tiny(archs=("vgg_tiny", "densenet_tiny"), img_size=32, seeds=(0, 1), cv_folds=2, lrs=(1e-2,),
                          batch_sizes=(16, 64), max_epochs=40, patience=5,
                          imagenet_weights=match_imagenet_weights(("vgg_tiny", "densenet_tiny"), [weights]))
    assert cfg.imagenet_weights == {"vgg_tiny": str(weights)}
    opts = RunOptions(max_epochs=2, batch_size=32, progress=False, accelerator="cpu", devices=1, seed=0)
    spy = _Spy(monkeypatch)
    logs = []
    res = run_grid(records, cfg, opts, tmp_path / "grid", log=logs.append)

    # leakage: every classifier fit saw training-part patients of one split only, never the external set
    pool_patients = {r.patient for r in records if r.split == "train"}
    groups = np.array([r.patient for r in records if r.split == "train"])
    labels = np.array([r.label for r in records if r.split == "train"])
    trains = [set(groups[patient_split(groups, labels, 0.3, s)[0]]) for s in cfg.seeds]
    assert spy.calls and all(any(c <= t for t in trains) for c in spy.calls)
    assert all(c <= pool_patients for c in spy.calls)

    for arch in cfg.archs:
        for pre in ("none", "sscl-full", "sscl-segmented"):
            for inp in ("full", "segmented"):
                auc = res["auc"][arch][pre][inp]
                assert 0.0 <= auc <= 1.0
                assert len(res["details"][arch][pre][inp]["per_seed"]) == 2
                assert res["external_auc"][arch][pre][inp] is not None
    assert "imagenet" in res["auc"]["vgg_tiny"] and res["encoders"]["vgg_tiny"]["imagenet"]["init"].startswith("imagenet:")
    assert "no weights file" in res["skipped"]["densenet_tiny"]["imagenet"]
    assert any("ImageNet condition skipped for densenet_tiny" in m for m in logs)

    out = tmp_path / "grid"
    doc = json.loads((out / "grid.json").read_text())
    assert doc["auc"]["vgg_tiny"]["sscl-full"]["full"] == pytest.approx(res["auc"]["vgg_tiny"]["sscl-full"]["full"])
    assert (out / "convergence.png").stat().st_size > 1000
    tables = (out / "tables.txt").read_text()
    for title in ("Table 1", "Table 2", "Table 3", "Full-SSCL", "Segmented-Segmented", "[external]"):
        assert title in tables
    # the SSCL encoders are locked artifacts; a second run reuses them instead of pre-training again
    art = out / "encoders" / "vgg_tiny-sscl-full"
    assert (art / "weights.safetensors").is_file()
    assert json.loads((art / "config.json").read_text())["kind"] == "sscl_encoder"
    logs.clear()
    cfg2 = GridConfig.tiny(archs=("vgg_tiny",), pretrainings=("sscl-full",), img_size=32, seeds=(0,), cv_folds=2,
                           lrs=(1e-2,), batch_sizes=(16,), max_epochs=10)
    res2 = run_grid(records, cfg2, opts, out, log=logs.append)
    assert any("reusing" in m for m in logs)
    assert res2["encoders"]["vgg_tiny"]["sscl-full"]["hash"] == res["encoders"]["vgg_tiny"]["sscl-full"]["hash"]
    js = summary_json(res)
    assert set(js["auc"]) == set(cfg.archs) and js["paper"] is None
    assert "note: the paper's numbers" in format_tables(res)


def test_paper_numbers_are_shown_beside_ours_for_acdc():
    res = {"auc": {"vgg16": {"none": {"full": 0.6}}}, "std": {"vgg16": {"none": {"full": 0.05}}},
           "skipped": {"vgg16": {}}, "config": {"level": "patient", "inputs": ["full"]},
           "data": {"n_external_slices": 0}, "paper": sscl.PAPER_ACDC}
    text = format_tables(res)
    assert "0.600±0.050 (paper 0.542)" in text


@pytest.fixture(scope="module")
def small_phantom(tmp_path_factory):
    from alan.phantom.write import synthesize

    return synthesize("acdc", tmp_path_factory.mktemp("ph") / "acdc", seed=0, size="small", spurious=True,
                      broken_test=True, workers=1)


def test_cli_grid_on_the_small_acdc_phantom(tmp_path, small_phantom):
    """`alan synth acdc --size small` -> `alan sscl grid --json` through the real reader."""
    from typer.testing import CliRunner

    from alan.cli.main import app

    data = small_phantom
    out = tmp_path / "grid"
    r = CliRunner().invoke(app, ["sscl", "grid", "--data", str(data), "--out", str(out), "--preset", "tiny",
                                 "--arch", "vgg_tiny", "densenet_tiny", "--img-size", "32", "--seeds", "1",
                                 "--pretrain-epochs", "1", "--pretrain-batch-size", "16", "--json", "--no-progress",
                                 "--accelerator", "cpu"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    assert set(doc["auc"]) == {"vgg_tiny", "densenet_tiny"}
    assert set(doc["auc"]["vgg_tiny"]) == {"none", "sscl-full", "sscl-segmented"}
    assert set(doc["auc"]["vgg_tiny"]["none"]) == {"full", "segmented"}
    assert doc["paper"] is None  # a phantom, not real ACDC
    assert doc["data"]["n_external_patients"] == 5 and doc["data"]["format"] == "acdc"
    assert "ImageNet condition skipped" in doc["skipped"]["vgg_tiny"]["imagenet"]
    assert (out / "tables.txt").is_file() and (out / "convergence.png").is_file()
    bad = CliRunner().invoke(app, ["sscl", "grid", "--data", str(data), "--out", str(out), "--arch", "vgg_tiny",
                                   "--imagenet-weights", str(tmp_path / "missing.pth")])
    assert bad.exit_code != 0 and isinstance(bad.exception, DataError)
    assert "missing.pth: no such weights file" in str(bad.exception)


def test_demo_grid_quick(tmp_path, small_phantom):
    from alan.pipelines.demo import sscl_grid

    res = sscl_grid(small_phantom, tmp_path / "demo", quick=True)
    assert "Table 1" in res["tables"] and res["figures"] and (tmp_path / "demo" / "grid.json").is_file()
    assert set(res["auc"]) == {"vgg_tiny", "densenet_tiny"}


def test_cli_pretrain_writes_a_locked_encoder_and_resumes(tmp_path, small_phantom):
    from typer.testing import CliRunner

    from alan.cli.main import app
    from alan.models.encoders import load_encoder

    out = tmp_path / "pre"
    args = ["sscl", "pretrain", "--data", str(small_phantom), "--out", str(out), "--arch", "vgg_tiny", "--input",
            "segmented", "--margin", "2", "--img-size", "32", "--batch-size", "8", "--no-progress",
            "--accelerator", "cpu", "--devices", "1"]
    r = CliRunner().invoke(app, [*args, "--epochs", "1"])
    assert r.exit_code == 0, r.output
    enc = load_encoder(out / "encoder")
    cfg = json.loads((out / "encoder" / "config.json").read_text())
    assert cfg["kind"] == "sscl_encoder" and cfg["hash"] == enc.hash and enc.config.init == "sscl"
    assert cfg["pretraining"]["input"] == "segmented" and cfg["data"]["margin"] == 2
    assert cfg["data"]["mask"]["source"] == "gt" and cfg["pretraining"]["epochs_run"] == 1
    r2 = CliRunner().invoke(app, [*args, "--epochs", "2", "--resume"])
    assert r2.exit_code == 0, r2.output
    cfg2 = json.loads((out / "encoder" / "config.json").read_text())
    assert cfg2["pretraining"]["epochs_run"] == 2 and cfg2["run"]["resume"] is True


def test_pretrain_images_edes_or_every_cine_frame():
    from alan.data.cmr import GroundTruthMasks
    from alan.pipelines.sscl import PretrainConfig, pretrain_images

    recs = synthetic_cmr(n_per_class=1, slices=2, size=24)
    x, g = pretrain_images(recs, PretrainConfig(frames="edes", input="full", img_size=16))
    assert x.shape == (2 * len(recs), 16, 16) and list(g[:4]) == [recs[0].patient] * 4
    x, g = pretrain_images(recs, PretrainConfig(frames="all", input="segmented", img_size=16), GroundTruthMasks())
    assert x.shape == (4 * len(recs), 16, 16) and x.dtype == np.uint8 and len(g) == len(x)
    assert (x[:, 0, 0] == 0).all()  # the corner is outside every heart mask


def test_cli_grid_takes_several_archs_after_one_option(tmp_path, monkeypatch, small_phantom):
    from typer.testing import CliRunner

    from alan.cli.main import app

    seen = {}

    def fake_run_grid(dataset, cfg, opts, out, mask_source=None, log=None, reuse=True):
        seen["cfg"], seen["opts"] = cfg, opts
        return {"auc": {}, "seconds": 0.0}

    monkeypatch.setattr(sscl, "run_grid", fake_run_grid)
    r = CliRunner().invoke(app, ["sscl", "grid", "--data", str(small_phantom), "--out", str(tmp_path), "--arch",
                                 "vgg16", "densenet121", "--seeds", "2", "--devices", "2", "--strategy", "ddp",
                                 "--json"])
    assert r.exit_code == 0, r.output
    assert seen["cfg"].archs == ("vgg16", "densenet121") and seen["cfg"].seeds == (0, 1)
    assert seen["cfg"].img_size == 224 and seen["opts"].devices == 2 and seen["opts"].strategy == "ddp"
    r = CliRunner().invoke(app, ["sscl", "grid", "--data", str(small_phantom), "--out", str(tmp_path), "stray"])
    assert r.exit_code != 0
