"""The one Parcellator: the shipped pair as every command's default, one backbone pass."""

import json
import subprocess
import sys

import numpy as np
import pytest

from alan.errors import AlanError
from alan.models.backbones import bundled_backbone, load_backbone
from alan.models.parcellator import Parcellator, compute_parcels
from alan.models.raptor import bundled_head, load_head


def test_load_without_paths_is_the_shipped_pair_and_says_so():
    p = Parcellator.load()
    bb = load_backbone(bundled_backbone())
    head = load_head(bundled_head(), backbone=bb)
    assert p.backbone.hash == bb.hash and p.head.hash == head.hash and head.config["backbone_hash"] == bb.hash
    assert "shipped" in p.note
    with pytest.raises(AlanError, match="--head"):
        Parcellator.load(backbone=bundled_backbone())
    assert Parcellator.load(bundled_backbone(), bundled_head()).note is None


def test_cls_and_parcels_is_one_pass_with_the_same_parcels():
    p = Parcellator.load()
    frames = np.random.default_rng(0).random((3, 112, 112)).astype(np.float32)
    calls = []
    forward = p.backbone.forward

    def counted(x, *size):
        calls.append(len(x))
        return forward(x, *size)

    p.backbone.forward = counted
    cls, parcels = p.cls_and_parcels(frames)
    assert calls == [3] and cls.shape == (3, p.backbone.embed_dim)
    assert np.array_equal(parcels, compute_parcels(p.backbone, p.head, frames))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from alan.phantom import synthesize

    return synthesize("echonet", tmp_path_factory.mktemp("ph") / "echonet", size="small", seed=0)


def _alan(*args, cwd):
    return subprocess.run([sys.executable, "-m", "alan.cli.main", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_commands_default_to_the_shipped_pair(phantom, tmp_path):
    note = "using the backbone and RAPTOR head shipped with alan"
    r = _alan("parcels", phantom, "--limit", "1", "--overlay", "none", "--out", tmp_path / "maps", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert note in r.stderr
    r = _alan("segment", "fit", "--data", phantom, "--split", "all", "--out", tmp_path / "lv.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert note in r.stderr
    prov = json.loads((tmp_path / "lv.json").read_text())["provenance"]
    assert prov["head_hash"] == load_head(bundled_head()).hash
    r = _alan("segment", "eval", "--model", tmp_path / "lv.json", "--data", phantom, "--split", "all",
              "--baseline-split", "all", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report["baseline"]["LV"]) == {"ED", "ES"} and note in r.stderr
