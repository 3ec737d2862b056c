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


def _sector_frames(n: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    frames = np.clip(rng.gamma(2.0, 30.0, (n, size, size)), 2, 255).astype(np.uint8)
    frames[:, np.hypot(yy - size / 2, xx - size / 2) >= size / 2 - 1] = 0
    return frames


def test_a_gray_reference_matches_each_frame_before_standardising(micro, tmp_path):
    from alan.models.backbones import with_gray_reference
    from alan.transforms.intensity import gray_histogram, gray_reference, match_gray

    micro.hash = save_backbone(micro, tmp_path / "plain")
    ref = gray_reference(gray_histogram(_sector_frames(seed=1)))
    matched = with_gray_reference(micro, ref, data=["somewhere"])
    frames = torch.from_numpy(_sector_frames(2, 40))
    resized = F.interpolate(frames[:, None].float() / 255, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(matched.prepare(frames), ((match_gray(resized, ref) - 0.3) / 0.2).expand(-1, 3, -1, -1))
    # a brighter scanner setting of the same frames (gamma 0.5) reaches the ViT nearly unchanged
    # (not exactly: the resize, before the matching, does not commute with the gamma curve)
    bright = torch.from_numpy(np.where(_sector_frames(2, 40) > 1, np.round(255 * (_sector_frames(2, 40) / 255) ** 0.5), 0).astype(np.uint8))
    assert (matched.prepare(bright) - matched.prepare(frames)).abs().mean() < 0.1
    assert (micro.prepare(bright) - micro.prepare(frames)).abs().mean() > 0.5
    # the copy keeps the weights, records where it came from, and round-trips with a new hash
    assert all(torch.equal(v, matched.vit.state_dict()[k]) for k, v in micro.vit.state_dict().items())
    assert matched.config.meta["gray_match"] == {"from": micro.hash, "data": ["somewhere"]}
    h = save_backbone(matched, tmp_path / "matched")
    loaded = load_backbone(tmp_path / "matched")
    assert h != micro.hash and loaded.config.gray_reference == ref
    torch.testing.assert_close(loaded.prepare(frames), matched.prepare(frames))
    # an artifact without a reference writes no key for it (earlier artifacts keep their hash)
    assert "gray_reference" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    with pytest.raises(AlanError, match="non-decreasing"):
        with_gray_reference(micro, ref[::-1])
    with pytest.raises(AlanError, match="257"):
        with_gray_reference(micro, ref[:10])
    # the gain-gamma method: prepare uses it, the JSON keeps it (and the histogram copy writes no key for it)
    gg = with_gray_reference(micro, ref, "gain-gamma")
    torch.testing.assert_close(gg.prepare(frames), ((match_gray(resized, ref, "gain-gamma") - 0.3) / 0.2).expand(-1, 3, -1, -1))
    save_backbone(gg, tmp_path / "gg")
    assert load_backbone(tmp_path / "gg").config.gray_method == "gain-gamma"
    assert "gray_method" not in json.loads((tmp_path / "matched" / "config.json").read_text())
    with pytest.raises(AlanError, match="gain-gamma"):
        with_gray_reference(micro, ref, "log")


def test_cli_gray_match_takes_the_reference_from_the_training_frames(micro, tmp_path, run_cli):
    from tests.data.fixtures import write_echonet

    from alan.data import open_dataset
    from alan.transforms.intensity import gray_histogram, gray_reference
    from alan.transforms.spatial import resize_uint8

    videos = [dict(name=f"V{i}", frames=_sector_frames(4, 48, seed=i), split=s)
              for i, s in enumerate(["TRAIN", "TRAIN", "VAL"])]
    root = write_echonet(tmp_path / "echonet", videos)
    save_backbone(micro, tmp_path / "bb")
    r = run_cli("backbone", "gray-match", str(tmp_path / "bb"), "--data", str(root), "--out", str(tmp_path / "bbm"))
    assert r.returncode == 0 and f"weights of {micro.hash}" in r.stdout and "2 records" in r.stdout, r.stderr
    train = [rec for rec in open_dataset(root, "echonet") if rec.split.upper() == "TRAIN"]
    hist = sum(gray_histogram(resize_uint8(np.asarray(rec.frames), 64)) for rec in train)
    loaded = load_backbone(tmp_path / "bbm")
    np.testing.assert_allclose(loaded.config.gray_reference, gray_reference(hist), atol=1e-7)
    assert loaded.config.meta["gray_match"]["from"] == micro.hash and "gray-match" in loaded.config.command
    assert "histogram, matched to" in run_cli("backbone", "info", str(tmp_path / "bbm")).stdout
    r = run_cli("backbone", "gray-match", str(tmp_path / "bb"), "--data", str(root), "--method", "gain-gamma",
                "--out", str(tmp_path / "bbg"))
    assert r.returncode == 0 and load_backbone(tmp_path / "bbg").config.gray_method == "gain-gamma", r.stderr
    r = run_cli("backbone", "gray-match", str(tmp_path / "bb"), "--data", str(root), "--method", "log", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "--method" in r.stderr and not (tmp_path / "bad").exists()
    # a split with no records: one line, exit 2, nothing written
    r = run_cli("backbone", "gray-match", str(tmp_path / "bb"), "--data", str(root), "--split", "test", "--out", str(tmp_path / "no"))
    assert r.returncode == 2 and "no records" in r.stderr and not (tmp_path / "no").exists()
