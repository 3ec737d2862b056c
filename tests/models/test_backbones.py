"""Backbone factory, input convention and locked artifacts (save/load, hash, tamper detection)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from alan.errors import AlanError, ArtifactError
from alan.models.backbones import ARCHS, BackboneConfig, create_backbone, create_vit, gray_stats, load_backbone, save_backbone


@pytest.fixture
def micro():
    torch.manual_seed(0)
    return create_backbone("vit_micro_p8_64", mean=[0.3] * 3, std=[0.2] * 3).eval()


def test_official_dino_key_layout():
    vit = create_vit("vit_small_p8_224")
    sd = vit.state_dict()
    assert len(sd) == 150 and tuple(sd["pos_embed"].shape) == (1, 785, 384)
    assert {k.split(".")[0] for k in sd} == {"cls_token", "pos_embed", "patch_embed", "blocks", "norm"}
    assert set(sd) == set(timm.create_model("vit_small_patch8_224", pretrained=False, num_classes=0).state_dict())


@pytest.mark.parametrize("arch", ["vit_small_p4_112", "vit_tiny_p8_112", "vit_micro_p8_64"])
def test_token_grid(arch):
    spec = ARCHS[arch]
    bb = create_backbone(arch).eval()
    with torch.no_grad():
        cls, tokens = bb(torch.zeros(1, 50, 70, dtype=torch.uint8))
    g = spec.img_size // spec.patch_size
    assert bb.grid == g and cls.shape == (1, spec.embed_dim) and tokens.shape == (1, g * g, spec.embed_dim)


def test_dynamic_vit_has_the_same_state_dict_and_output():
    static, dynamic = create_vit("vit_micro_p8_64"), create_vit("vit_micro_p8_64", dynamic_img_size=True)
    dynamic.load_state_dict(static.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(static.forward_features(x), dynamic.forward_features(x))
    assert dynamic.forward_features(torch.randn(1, 3, 24, 24)).shape == (1, 1 + 9, 64)


def test_a_larger_input_size_gives_a_finer_grid_with_resampled_position_embeddings(micro):
    from timm.layers import resample_abs_pos_embed

    frames = torch.rand(2, 40, 50)
    cls, tokens = micro(frames, 128)
    assert micro.grid_at(128) == 16 and tokens.shape == (2, 256, micro.embed_dim)
    # oracle: a static ViT built at 128 px with timm's own resampling of the trained position embeddings
    static = create_vit("vit_micro_p8_64")
    static = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=128, patch_size=8,
                               embed_dim=static.embed_dim, depth=len(static.blocks),
                               num_heads=static.blocks[0].attn.num_heads).eval()
    sd = dict(micro.vit.state_dict())
    sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], (16, 16), num_prefix_tokens=1)
    static.load_state_dict(sd, strict=True)
    with torch.no_grad():
        want = static.forward_features(micro.prepare(frames, 128))
    torch.testing.assert_close(cls, want[:, 0])
    torch.testing.assert_close(tokens, want[:, 1:])
    # the default is the training size, unchanged
    assert micro(frames)[1].shape == (2, 64, micro.embed_dim)
    with pytest.raises(AlanError, match="multiple of the patch size 8"):
        micro.prepare(frames, 100)


def test_prepare_is_resize_replicate_standardise(micro):
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 40, 50), dtype=np.uint8))
    x = micro.prepare(frames)
    ref = F.interpolate(frames[:, None].float() / 255, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(x, ((ref - 0.3) / 0.2).expand(-1, 3, -1, -1))
    torch.testing.assert_close(micro.prepare(frames.float() / 255), x)  # float in [0, 1] is the same input
    cls, tokens = micro(frames)
    feats = micro.vit.forward_features(x)
    torch.testing.assert_close(cls, feats[:, 0])
    torch.testing.assert_close(tokens, feats[:, 1:])


def test_save_load_roundtrip(micro, tmp_path):
    h = save_backbone(micro, tmp_path / "bb", meta={"note": "x"})
    assert h == micro.hash and len(h) == 16
    cfg = json.loads((tmp_path / "bb" / "config.json").read_text())
    assert cfg["kind"] == "backbone" and cfg["arch"] == "vit_micro_p8_64" and cfg["hash"] == h
    assert cfg["mean"] == [0.3] * 3 and cfg["meta"]["note"] == "x" and "data_fingerprint" in cfg and "command" in cfg
    loaded = load_backbone(tmp_path / "bb")
    assert loaded.hash == h and not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.config == micro.config
    x = torch.randint(0, 256, (2, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        for a, b in zip(micro(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a run folder holding backbone/ loads too
    save_backbone(micro, tmp_path / "run" / "backbone")
    assert load_backbone(tmp_path / "run").hash == h


def test_hash_changes_with_weights_and_config(micro, tmp_path):
    h1 = save_backbone(micro, tmp_path / "a")
    other = create_backbone("vit_micro_p8_64", mean=[0.3] * 3, std=[0.2] * 3)
    assert save_backbone(other, tmp_path / "b") != h1
    micro.config.std = [0.25] * 3
    assert save_backbone(micro, tmp_path / "c") != h1


def test_tampered_or_wrong_artifacts_are_refused(micro, tmp_path):
    save_backbone(micro, tmp_path / "bb")
    cfg_path = tmp_path / "bb" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "mean": [0.5] * 3}))
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        load_backbone(tmp_path / "bb")
    cfg_path.write_text(json.dumps({**cfg, "kind": "raptor_head"}))
    with pytest.raises(ArtifactError, match="expected 'backbone'"):
        load_backbone(tmp_path / "bb")
    with pytest.raises(ArtifactError, match="not an alan artifact"):
        load_backbone(tmp_path / "nothing")


def test_unknown_arch_and_bad_stats():
    with pytest.raises(AlanError, match="unknown backbone architecture 'vit_huge'.*vit_small_p8_224"):
        create_backbone("vit_huge")
    assert gray_stats(0.2, 0.1) == ([0.2] * 3, [0.1] * 3)
    with pytest.raises(AlanError, match="std > 0"):
        gray_stats(0.2, 0.0)


def test_config_from_dict_ignores_artifact_keys():
    c = BackboneConfig(arch="vit_micro_p8_64", img_size=64, patch_size=8, embed_dim=64)
    assert BackboneConfig.from_dict({**c.to_dict(), "hash": "abc"}) == c
