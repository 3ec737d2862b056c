import json

import pytest
import torch

from alan.artifacts import content_hash, load_artifact, save_artifact
from alan.errors import ArtifactError


def test_round_trip_hash_and_zero_dim_tensors(tmp_path):
    tensors = {"w": torch.randn(3, 4), "n": torch.tensor(7), "b": torch.zeros(0)}
    h = save_artifact(tmp_path / "a", tensors, {"kind": "thing", "x": 1})
    got, cfg = load_artifact(tmp_path / "a", kind="thing")
    assert cfg["hash"] == h == content_hash(got, cfg)
    assert torch.equal(got["w"], tensors["w"]) and got["n"].item() == 7
    # the hash sees every byte: change one value and it differs
    assert content_hash({**tensors, "n": torch.tensor(8)}, cfg) != h


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path):
    save_artifact(tmp_path / "a", {"w": torch.ones(2)}, {"kind": "thing"})
    save_artifact(tmp_path / "a", {"w": torch.zeros(2)}, {"kind": "thing"})
    assert torch.equal(load_artifact(tmp_path / "a")[0]["w"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_tampered_wrong_kind_and_missing_are_refused(tmp_path):
    save_artifact(tmp_path / "a", {"w": torch.ones(2)}, {"kind": "thing", "x": 1})
    with pytest.raises(ArtifactError, match="expected 'other'"):
        load_artifact(tmp_path / "a", kind="other")
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    cfg["x"] = 2
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="hash mismatch"):
        load_artifact(tmp_path / "a")
    with pytest.raises(ArtifactError, match="not an alan artifact"):
        load_artifact(tmp_path / "missing")
