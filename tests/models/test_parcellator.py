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
    # one pass, and one more at the backbone's own size for the view features of a head fed larger frames
    passes = 1 + (p.head.input_size not in (None, p.backbone.config.img_size))
    assert calls == [3] * passes and cls.shape == (3, p.backbone.embed_dim)
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


def test_batches_across_fill_full_batches_in_order_and_pull_lazily():
    from alan.models.parcellator import batches_across

    rng = np.random.default_rng(0)
    lengths = [3, 0, 12, 5, 8, 1]
    items = [(i, rng.random((n, 4, 4)).astype(np.float32)) for i, n in enumerate(lengths)]
    pulled = []

    def lazy():
        for key, frames in items:
            pulled.append(key)
            yield key, frames

    rows, seen, got = [], {}, []
    for frames, pieces in batches_across(lazy(), 8):
        got.append(frames)
        rows.append(len(frames))
        assert sum(n for _, n, _ in pieces) == len(frames)
        for key, n, last in pieces:
            seen[key] = seen.get(key, 0) + n
            assert last == (seen[key] == lengths[key])
        # never more pulled than the frames of this batch need, plus the item being cut
        held = sum(lengths[k] for k in pulled) - sum(rows)
        assert held < lengths[pulled[-1]] + 8
    assert rows == [8, 8, 8, 5] and seen == dict(enumerate(lengths))
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate([f for _, f in items]))
    with pytest.raises(AlanError, match="cannot be stacked"):
        list(batches_across([(0, np.zeros((2, 4, 4))), (1, np.zeros((2, 5, 5)))], 8))


def test_cls_and_parcels_across_records_equal_record_by_record():
    """Frames of several items in one backbone batch give each item what it gets on its own."""
    import torch

    from alan.models.backbones import create_backbone
    from alan.models.raptor import RaptorHead

    torch.manual_seed(0)
    bb = create_backbone("vit_tiny_p8_112").eval()
    p = Parcellator(bb, RaptorHead(bb.embed_dim, 8).eval(), work_size=112, batch_size=8)
    rng = np.random.default_rng(1)
    items = [(f"r{i}", rng.random((n, 112, 112)).astype(np.float32)) for i, n in enumerate([3, 12, 5, 1])]
    calls = []
    forward = p.backbone.forward

    def counted(x, *size):
        calls.append(len(x))
        return forward(x, *size)

    p.backbone.forward = counted
    got = list(p.cls_and_parcels_across(items))
    assert calls == [8, 8, 5]  # 21 frames in full batches, not one ragged batch per item
    assert [k for k, _, _ in got] == [k for k, _ in items]
    for (_, cls, parcels), (_, frames) in zip(got, items):
        cls0, parcels0 = p.cls_and_parcels(frames)
        np.testing.assert_allclose(cls, cls0, rtol=1e-4, atol=1e-5)
        assert parcels.dtype == parcels0.dtype and parcels.shape == parcels0.shape
        assert (parcels != parcels0).mean() < 1e-4  # an argmax may flip only on a float tie


@pytest.mark.parametrize("features", ["cls", "grid"])
def test_view_features_at_a_view_size(features):
    """View features of frames at `view_size`: from the head's pass when it is the head's input size,
    else from a pass of their own; None keeps the backbone's own size, bit for bit."""
    import torch

    from alan.models.backbones import create_backbone, view_features
    from alan.models.parcellator import compute_tokens_and_logits
    from alan.models.raptor import RaptorHead
    from alan.transforms.intensity import to_unit
    from alan.transforms.spatial import resize_unit

    torch.manual_seed(0)
    bb = create_backbone("vit_micro_p8_112").eval().requires_grad_(False)
    head = RaptorHead(bb.embed_dim, 6, input_size=128).eval()
    frames = np.random.default_rng(2).random((3, 112, 112)).astype(np.float32)
    unit = to_unit(frames)

    def direct(size):  # a separate pass of the frames at `size`
        return view_features(*bb(resize_unit(unit, size), size), features)

    today = view_features(*bb(resize_unit(unit, 112)), features)  # the native pass, as it always was
    calls = []
    forward = bb.forward

    def counted(x, *size):
        calls.append(tuple(x.shape[-2:]))
        return forward(x, *size)

    bb.forward = counted
    _, logits = compute_tokens_and_logits(bb, head, frames, features=None)
    calls.clear()
    same, same_logits = compute_tokens_and_logits(bb, head, frames, features=features, view_size=128)
    assert calls == [(128, 128)]  # the head's pass only
    torch.testing.assert_close(same, direct(128))
    assert torch.equal(same_logits, logits)
    calls.clear()
    native, _ = compute_tokens_and_logits(bb, head, frames, features=features)
    assert calls == [(128, 128), (112, 112)] and torch.equal(native, today)
    calls.clear()
    other, other_logits = compute_tokens_and_logits(bb, head, frames, features=features, view_size=96)
    assert calls == [(128, 128), (96, 96)] and torch.equal(other_logits, logits)
    torch.testing.assert_close(other, direct(96))
    assert other.shape == native.shape and not torch.allclose(other, native, atol=1e-3)
    # the Parcellator's entry points pass the size on
    p = Parcellator(bb, head, work_size=112, batch_size=2)
    cls, parcels = p.cls_and_parcels(frames, features, view_size=96)
    np.testing.assert_allclose(cls, direct(96).numpy(), rtol=1e-4, atol=1e-5)
    assert np.array_equal(parcels, compute_parcels(bb, head, frames))
    (key, across, _), = p.cls_and_logits_across([("a", frames)], features=features, view_size=96)
    torch.testing.assert_close(across, direct(96), rtol=1e-4, atol=1e-5)
    with pytest.raises(AlanError, match="multiple of the patch size"):
        compute_tokens_and_logits(bb, head, frames, features=features, view_size=100)
