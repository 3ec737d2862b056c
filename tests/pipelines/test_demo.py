"""`alan demo --quick`: the whole pipeline end to end on the built-in phantoms (CI runs this)."""

import json
import math

from typer.testing import CliRunner

from alan.cli.main import app
from alan.models.backbones import bundled_backbone, load_backbone


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    for target in ("LV", "LA"):
        for phase in ("ED", "ES"):
            v = r["segmentation"][target][phase]["dice_mean"]
            assert 0.0 <= v <= 1.0 and not math.isnan(v)
    assert 0.0 <= r["views"]["accuracy"] <= 1.0
    assert r["backbone"]["hash"] == load_backbone(bundled_backbone()).hash
    assert r["backbone"]["source"] == "shipped"
    stages = r["stages_s"]
    assert any(s.startswith("RAPTOR") for s in stages) and any(s.startswith("SSCL") for s in stages)
    assert r["total_s"] >= sum(stages.values()) - 1.0
    auc = r["sscl"]["auc"]
    assert auc and all(0.0 <= v <= 1.0 for arch in auc.values() for pre in arch.values() for v in pre.values() if v is not None)
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
