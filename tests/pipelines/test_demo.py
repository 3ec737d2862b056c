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
