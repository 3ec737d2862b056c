"""Foreign checkpoint import: official DINO layouts, timm, our artifacts; safe loading; resampling."""

from __future__ import annotations

import argparse
import fractions

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from alan.errors import AlanError, DataError
from alan.models.backbones import IMAGENET_MEAN, create_backbone, load_backbone, save_backbone
from alan.models.weights import import_backbone, read_checkpoint


@pytest.fixture(scope="module")
def vit_s8():
    """A timm ViT-S/8 at 224 (the official DINO ImageNet weights' architecture) with random weights."""
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch8_224", pretrained=False, num_classes=0).eval()


@pytest.fixture(scope="module")
def bare(vit_s8, tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "dino_deitsmall8_pretrain.pth"
    torch.save(vit_s8.state_dict(), path)
    return path


def full_checkpoint(student: dict, teacher: dict, path):
    """The layout of DINO's checkpoint.pth: DDP student, bare teacher, heads, optimizer, args."""
    head = {"head.mlp.0.weight": torch.randn(16, 384), "head.last_layer.weight_g": torch.ones(32, 1),
            "head.last_layer.weight_v": torch.randn(32, 16)}
    ckpt = {
        "student": {**{f"module.backbone.{k}": v for k, v in student.items()},
                    **{f"module.{k}": v for k, v in head.items()}},
        "teacher": {**{f"backbone.{k}": v for k, v in teacher.items()}, **head},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=8, out_dim=65536, lr=5e-4),
        "dino_loss": {"center": torch.zeros(1, 32)},
    }
    torch.save(ckpt, path)
    return path


def outputs(model, x):
    with torch.no_grad():
        return model.forward_features(x)


def assert_same_weights(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_bare_official_state_dict_reproduces_the_source(vit_s8, bare):
    bb = import_backbone(bare, "vit_small_p8_224")
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(outputs(bb.vit, x), outputs(vit_s8, x), rtol=0, atol=0)
    assert bb.config.mean == list(IMAGENET_MEAN) and bb.config.meta["import"]["resampled"] == {}
    assert bb.config.meta["import"]["layout"] == "state-dict"


def test_full_dino_checkpoint_teacher_and_student(vit_s8, tmp_path):
    teacher = vit_s8.state_dict()
    student = {k: v + 0.01 for k, v in teacher.items()}
    path = full_checkpoint(student, teacher, tmp_path / "checkpoint.pth")
    t = import_backbone(path, "vit_small_p8_224")  # teacher by default
    assert_same_weights(t.vit.state_dict(), teacher)
    s = import_backbone(path, "vit_small_p8_224", key="student")
    torch.testing.assert_close(s.vit.state_dict()["blocks.3.mlp.fc1.weight"], student["blocks.3.mlp.fc1.weight"])
    assert t.config.meta["import"]["layout"] == "dino-checkpoint:teacher"
    with pytest.raises(AlanError, match="--key must be teacher or student"):
        import_backbone(path, "vit_small_p8_224", key="ema")


@pytest.mark.parametrize("wrap", ["state_dict", "model"])
def test_timm_checkpoint_wrappers_and_classifier_head(vit_s8, tmp_path, wrap):
    clf = timm.create_model("vit_small_patch8_224", pretrained=False, num_classes=10)
    clf.load_state_dict(vit_s8.state_dict(), strict=False)
    torch.save({wrap: clf.state_dict(), "epoch": 3}, tmp_path / "timm.pth")
    bb = import_backbone(tmp_path / "timm.pth", "vit_small_p8_224")  # head.* dropped
    assert_same_weights(bb.vit.state_dict(), vit_s8.state_dict())


def test_safetensors_and_own_artifact(vit_s8, tmp_path):
    save_file({k: v.contiguous() for k, v in vit_s8.state_dict().items()}, str(tmp_path / "model.safetensors"))
    a = import_backbone(tmp_path / "model.safetensors", "vit_small_p8_224")
    assert_same_weights(a.vit.state_dict(), vit_s8.state_dict())
    torch.manual_seed(1)
    own = create_backbone("vit_micro_p8_64", mean=[0.2] * 3, std=[0.1] * 3)
    h = save_backbone(own, tmp_path / "own")
    b = import_backbone(tmp_path / "own", "vit_micro_p8_64")
    assert b.config.mean == [0.2] * 3 and b.config.meta["import"]["hash"] == h
    x = torch.randint(0, 256, (2, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(b(x)[1], own.eval()(x)[1], rtol=0, atol=0)
    assert a.config.source.startswith("import:model.safetensors")


def test_resampled_import_s8_224_into_s4_112(vit_s8, bare):
    bb = import_backbone(bare, "vit_small_p4_112")
    assert bb.config.meta["import"]["resampled"] == {"patch_size": [8, 4]}  # 28x28 grid both: pos_embed kept
    torch.testing.assert_close(bb.vit.pos_embed, vit_s8.pos_embed, rtol=0, atol=0)
    with torch.no_grad():
        cls, tokens = bb(torch.randint(0, 256, (1, 112, 112), dtype=torch.uint8))
    assert tokens.shape == (1, 784, 384) and torch.isfinite(tokens).all() and torch.isfinite(cls).all()


def test_pos_embed_resampling_agrees_with_timm(vit_s8, bare):
    bb = import_backbone(bare, "vit_small_p8_112")  # 28x28 -> 14x14 grid, same patch
    ref = resample_abs_pos_embed(vit_s8.pos_embed.detach(), [14, 14], num_prefix_tokens=1)
    torch.testing.assert_close(bb.vit.pos_embed, ref, rtol=0, atol=0)
    assert bb.config.meta["import"]["resampled"] == {"grid": [28, 14]}
    torch.testing.assert_close(bb.vit.patch_embed.proj.weight, vit_s8.patch_embed.proj.weight)
    with torch.no_grad():
        assert torch.isfinite(bb(torch.rand(1, 112, 112))[1]).all()


def test_strict_loading_names_missing_and_unexpected_keys(vit_s8, tmp_path):
    sd = dict(vit_s8.state_dict())
    del sd["norm.weight"]
    for i in range(8):
        sd[f"extra.{i}"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(DataError) as e:
        import_backbone(tmp_path / "bad.pth", "vit_small_p8_224")
    msg = str(e.value)
    assert "\n" not in msg and "bad.pth" in msg
    assert "missing keys (1): norm.weight" in msg and "unexpected keys (8): extra.0" in msg and "(+2 more)" in msg
    torch.save(vit_s8.state_dict(), tmp_path / "s8.pth")
    with pytest.raises(DataError, match="shape mismatch"):
        import_backbone(tmp_path / "s8.pth", "vit_tiny_p8_112")


def test_pickles_needing_other_globals_are_refused(tmp_path):
    torch.save({"w": torch.zeros(2), "why": fractions.Fraction(1, 3)}, tmp_path / "evil.pth")
    with pytest.raises(DataError) as e:
        read_checkpoint(tmp_path / "evil.pth")
    msg = str(e.value)
    assert "\n" not in msg and "refusing to unpickle" in msg and "fractions.Fraction" in msg
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(DataError, match="junk.pth"):
        read_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(DataError, match="no such file"):
        read_checkpoint(tmp_path / "missing.pth")


def test_argparse_namespace_is_the_only_extra_global(tmp_path):
    torch.save({"args": argparse.Namespace(a=1), "x": torch.ones(1)}, tmp_path / "ok.pth")
    assert read_checkpoint(tmp_path / "ok.pth")["args"].a == 1



def test_cli_import_and_errors(bare, tmp_path, run_cli):
    r = run_cli("backbone", "import", str(bare), "--arch", "vit_small_p4_112", "--out", str(tmp_path / "bb"))
    assert r.returncode == 0, r.stderr
    bb = load_backbone(tmp_path / "bb")
    assert bb.hash in r.stdout and bb.config.command.startswith("alan backbone import")
    r = run_cli("backbone", "info", str(tmp_path / "bb"))
    assert r.returncode == 0 and bb.hash in r.stdout
    torch.save({"w": fractions.Fraction(1, 2)}, tmp_path / "evil.pth")
    for args in (["backbone", "import", str(tmp_path / "evil.pth"), "--arch", "vit_small_p8_224", "--out", str(tmp_path / "x")],
                 ["backbone", "import", str(bare), "--arch", "vit_nope", "--out", str(tmp_path / "x")],
                 ["backbone", "import", str(bare), "--arch", "vit_tiny_p8_112", "--out", str(tmp_path / "x")]):
        r = run_cli(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def _dinov2_source():
    """A timm ViT with LayerScale (DINOv2's block) at vit_small_p8_112's geometry, random weights."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(1)
    model = VisionTransformer(img_size=112, patch_size=8, embed_dim=384, depth=12, num_heads=6, num_classes=0,
                              init_values=1.0).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ls1.gamma", "ls2.gamma")):
                p.uniform_(0.1, 2.0)  # not the identity, so a dropped gamma would show
    return model


def test_dinov2_layout_imports_with_layerscale_folded(tmp_path):
    src = _dinov2_source()
    state = {**src.state_dict(), "mask_token": torch.zeros(1, 384)}  # the published file's keys
    assert any(k.endswith("ls1.gamma") for k in state)
    torch.save(state, tmp_path / "dinov2_vits14_pretrain.pth")
    bb = import_backbone(tmp_path / "dinov2_vits14_pretrain.pth", "vit_small_p8_112")
    assert bb.config.meta["import"]["layout"].startswith("dinov2")
    x = torch.randn(2, 3, 112, 112)
    torch.testing.assert_close(outputs(bb.vit, x), outputs(src, x), rtol=1e-4, atol=1e-4)


def _dinov3_official(model: torch.nn.Module) -> dict:
    """A timm DINOv3 ViT-S/16's weights in the official DINOv3 key layout (facebookresearch/dinov3):
    ``storage_tokens``, ``blocks.N.ls{1,2}.gamma``, a zero ``attn.qkv.bias`` with its ``bias_mask``,
    the RoPE ``periods`` buffer and the pre-training ``mask_token``."""
    out = {}
    for k, v in model.state_dict().items():
        k = k.replace("reg_token", "storage_tokens").replace(".gamma_1", ".ls1.gamma").replace(".gamma_2", ".ls2.gamma")
        out[k] = v.clone()
        if k.endswith("attn.qkv.weight"):
            out[k.replace("weight", "bias")] = torch.zeros(v.shape[0])
            out[k.replace("weight", "bias_mask")] = torch.ones(v.shape[0])
    out["mask_token"] = torch.zeros(1, 384)
    out["rope_embed.periods"] = torch.arange(1, 17, dtype=torch.float32)
    return out


def test_dinov3_official_layout_imports_into_the_dinov3_arch(tmp_path):
    """Oracle: the same timm DINOv3 model the weights were taken from gives the same tokens."""
    from alan.models.backbones import create_vit

    torch.manual_seed(0)
    src = create_vit("vit_small_p16_dinov3_224").eval()
    with torch.no_grad():  # non-trivial LayerScale so a dropped gamma would show
        for name, p in src.named_parameters():
            if name.endswith(("gamma_1", "gamma_2")):
                p.uniform_(0.5, 1.5)
    torch.save(_dinov3_official(src), tmp_path / "dinov3_vits16_pretrain.pth")
    bb = import_backbone(tmp_path / "dinov3_vits16_pretrain.pth", "vit_small_p16_dinov3_224")
    assert bb.config.meta["import"]["layout"].startswith("dinov3")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(bb.vit.forward_features(x), src.forward_features(x), rtol=1e-5, atol=1e-5)
        cls, tokens = bb.forward_tokens(x)
    assert cls.shape == (2, 384) and tokens.shape == (2, 14 * 14, 384)  # CLS and 4 storage tokens are not patches


def test_dinov3_and_register_layouts_are_refused_in_one_line(tmp_path):
    base = _dinov2_source().state_dict()
    v3 = {k: v for k, v in base.items() if k != "pos_embed"}
    v3.update({"storage_tokens": torch.zeros(1, 4, 384), "rope_embed.periods": torch.ones(16)})
    torch.save(v3, tmp_path / "dinov3_vits16.pth")
    with pytest.raises(DataError, match="DINOv3 weights .*rotary.*vit_small_p16_dinov3_224") as e:
        import_backbone(tmp_path / "dinov3_vits16.pth", "vit_small_p8_112")
    assert "\n" not in str(e.value)
    torch.save({**base, "register_tokens": torch.zeros(1, 4, 384)}, tmp_path / "dinov2_vits14_reg4.pth")
    with pytest.raises(DataError, match="register tokens"):
        import_backbone(tmp_path / "dinov2_vits14_reg4.pth", "vit_small_p8_112")
