"""`alan demo --quick`: the whole pipeline end to end on the built-in phantoms (CI runs this)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alan.cli.main import app
from alan.models.backbones import bundled_backbone, load_backbone


def _cli_json(*args):
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout[res.stdout.index("{"):])


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    backbone = str(bundled_backbone())
    assert r["backbone"]["hash"] == load_backbone(bundled_backbone()).hash
    assert r["backbone"]["source"] == "shipped"

    # every reported DICE is what the demo's saved models score when evaluated again from disk
    seg = r["segmentation"]
    # (a model that yields to another target is scored with that target's model, `--with`)
    for name, path in r["segment_models"].items():
        fmt, target = name.split("_")
        yielded = json.loads(Path(path).read_text())["hyperparameters"]["yields_to"]
        extra = [a for t in yielded for a in ("--with", r["segment_models"][f"{fmt}_{t}"])]
        again = _cli_json("segment", "eval", "--model", path, *extra, "--backbone", backbone, "--head",
                          r["raptor"]["path"], "--data", str(out / "data" / fmt), "--split", "test")
        for phase in ("ED", "ES"):
            want = again["dice"][target][phase]
            got = seg["by_dataset"][fmt]["dice"][target][phase]
            assert got["n"] == want["n"] > 0 and got["mean"] == pytest.approx(want["mean"], abs=1e-12)
    # the pooled rows: frame-weighted mean and pooled (ddof=0) std over the datasets
    for target in ("LV", "LA"):
        for phase in ("ED", "ES"):
            parts = [d["dice"][target][phase] for d in seg["by_dataset"].values()
                     if target in d["dice"] and d["dice"][target][phase]["n"]]
            n = sum(p["n"] for p in parts)
            mean = sum(p["mean"] * p["n"] for p in parts) / n
            var = sum(p["n"] * (p["std"] ** 2 + (p["mean"] - mean) ** 2) for p in parts) / n
            assert seg[target][phase]["n"] == n and seg[target][phase]["dice_mean"] == pytest.approx(mean)
            assert seg[target][phase]["dice_std"] == pytest.approx(math.sqrt(var))

    # view accuracy: the saved bank evaluated again, and the saved confusion matrix agree with it
    views = r["views"]
    again = _cli_json("views", "eval", "--bank", str(out / "models" / "views_bank"), "--backbone", backbone,
                      "--data", str(out / "data" / "tmed2"), "--k", str(views["k"]))
    assert again["by_k"][str(views["k"])]["accuracy"] == pytest.approx(views["accuracy"], abs=1e-12)
    cm = np.array(views["by_k"][str(views["k"])]["confusion"])
    assert cm.sum() == views["n_test"] and np.trace(cm) / cm.sum() == pytest.approx(views["accuracy"])
    rows = cm.sum(1)
    per_class = views["by_k"][str(views["k"])]["per_class"]
    for i, c in enumerate(views["classes"]):
        assert rows[i] == 0 or per_class[c] == pytest.approx(cm[i, i] / rows[i])

    # SSCL: each reported AUC is the mean of the per-seed AUCs the grid saved, as tables.txt prints it
    grid = json.loads((out / "sscl" / "grid.json").read_text())
    tables = (out / "sscl" / "tables.txt").read_text()
    auc = r["sscl"]["auc"]
    assert set(auc) == {"vgg_tiny", "densenet_tiny"}
    for arch, by_pre in auc.items():
        for pre, by_inp in by_pre.items():
            for inp, v in by_inp.items():
                seeds = grid["details"][arch][pre][inp]["per_seed"]
                assert v == pytest.approx(float(np.mean(seeds))) and f"{v:.3f}" in tables

    stages = r["stages_s"]
    assert any(s.startswith("RAPTOR") for s in stages) and any(s.startswith("SSCL") for s in stages)
    assert r["total_s"] >= sum(stages.values()) - 1.0
    html = (out / "report.html").read_text()
    assert "Segmentation" in html and "View classification" in html and html.count("<img") >= 3
    # a second run reuses the phantoms instead of rewriting them
    res2 = CliRunner().invoke(app, ["demo", "--quick", "--no-sscl", "--out", str(out)])
    assert res2.exit_code == 0, res2.output
    assert "reusing" in res2.output


def test_demo_train_backbone_uses_the_cpu_recipe_on_every_echo_phantom(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--quick", "--no-sscl", "--train-backbone", "--out", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert r["backbone"]["source"] == "trained" and r["backbone"]["steps"] == 10
    bb = load_backbone(out / "dino" / "backbone")
    assert r["backbone"]["hash"] == bb.hash and bb.config.arch == "vit_tiny_d6_p8_112"
    meta = bb.config.meta
    assert meta["data"]["format"] == "echonet+camus+tmed2" and len(meta["data"]["root"]) == 3
    assert meta["dino"]["head_batch_norm"] and meta["dino"]["teacher_temp"] == 0.02 and meta["steps"] == 10
    assert parcel_atlases_written(out)


def parcel_atlases_written(out) -> bool:
    return all((out / "figures" / f"parcels_{fmt}.png").is_file() for fmt in ("echonet", "camus"))
