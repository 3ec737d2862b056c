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


# --------------------------------------------------------------------- the output policy


def test_existing_non_artifact_paths_are_refused_and_kept(tmp_path, monkeypatch):
    from alan.artifacts import check_output_dir

    a_file = tmp_path / "notes.txt"
    a_file.write_text("precious")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "data.csv").write_text("1,2")
    other = tmp_path / "other"
    save_artifact(other, {"w": torch.ones(1)}, {"kind": "head"})
    for path, why in [(a_file, "not a folder"), (folder, "not an alan output"), (other, "not 'thing'")]:
        with pytest.raises(ArtifactError, match=why):
            save_artifact(path, {"w": torch.ones(2)}, {"kind": "thing"})
    assert a_file.read_text() == "precious" and (folder / "data.csv").read_text() == "1,2"
    assert load_artifact(other, kind="head")[1]["kind"] == "head"
    monkeypatch.chdir(folder)
    with pytest.raises(ArtifactError, match="current folder"):
        check_output_dir(".", "thing")
    with pytest.raises(ArtifactError, match="current folder"):
        check_output_dir(tmp_path, "thing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt", "other"]


def test_empty_folder_is_used_and_marker_names_the_kind(tmp_path):
    from alan.artifacts import MARKER, output_kind

    (tmp_path / "a").mkdir()
    save_artifact(tmp_path / "a", {"w": torch.ones(2)}, {"kind": "thing"})
    assert output_kind(tmp_path / "a") == "thing"
    assert json.loads((tmp_path / "a" / MARKER).read_text())["complete"] is True


def test_failed_write_leaves_old_artifact_and_stale_temporaries_are_cleaned(tmp_path):
    from alan.artifacts import MARKER, atomic_dir

    save_artifact(tmp_path / "a", {"w": torch.ones(2)}, {"kind": "thing"})
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "a", "thing") as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("boom")
    assert torch.equal(load_artifact(tmp_path / "a")[0]["w"], torch.ones(2))
    # a temporary left by a killed writer (its pid is gone) is removed by the next run
    stale = tmp_path / ".a.tmp-dead"
    stale.mkdir()
    (stale / MARKER).write_text(json.dumps({"kind": "thing", "complete": False, "pid": 2**22 + 12345}))
    foreign = tmp_path / ".a.tmp-foreign"  # not ours (no marker): never touched
    foreign.mkdir()
    save_artifact(tmp_path / "a", {"w": torch.zeros(2)}, {"kind": "thing"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.tmp-foreign", "a"]


def test_outputs_follow_the_umask(tmp_path):
    import os

    from alan.artifacts import atomic_write_text

    old = os.umask(0o022)
    try:
        save_artifact(tmp_path / "a", {"w": torch.ones(2)}, {"kind": "thing"})
        atomic_write_text(tmp_path / "t.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "t.txt").stat().st_mode & 0o777 == 0o644
    with pytest.raises(ArtifactError, match="is a folder"):
        atomic_write_text(tmp_path / "a", "x")


def test_json_outputs_are_strict_json(tmp_path):
    import numpy as np

    from alan.artifacts import atomic_write_json

    atomic_write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.5, float("inf")], "c": np.float64("nan"), "d": 2})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": None, "d": 2}
