"""The dinov2 recipe of `alan dino train`: the dense objective against a plain restatement of
DINOv2's formulas (DINO on the CLS, iBOT on the masked patches only, KoLeo against sklearn's
nearest neighbours), block masks, masking that touches only the masked positions, learning,
exact resume, the artifact (the teacher ViT only, loaded like a dino one) and the CLI."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.neighbors import NearestNeighbors
from test_dino import TINY, distinct_records, full_and_resumed, official_dino_loss, options, records, write_echonet

from alan.errors import AlanError, DataError
from alan.models.backbones import load_backbone
from alan.models.dino import DINO, DINOConfig, train_dino
from alan.models.ibot import block_masks, encode_masked, masked_vit
from alan.models.weights import import_backbone

V2 = dict(TINY, recipe="dinov2")


def views(b=6, n_local=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 64, 64, generator=g) for _ in range(2)] + \
           [torch.randn(b, 3, 32, 32, generator=g) for _ in range(n_local)]


# ---------------------------------------------------------------- the objective
def manual_student_tokens(vit, mask_token, images, masks):
    """timm's ViT written out: patch embedding, masked patches replaced by the mask token, CLS,
    position embedding, blocks, norm (DINOv2's prepare_tokens_with_masks)."""
    x = vit.patch_embed(images).flatten(1, 2)  # dynamic_img_size: (N, H, W, D) -> (N, L, D)
    x = torch.where(masks.flatten(1)[..., None], mask_token.to(x.dtype).expand_as(x), x)
    x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + vit.pos_embed
    return vit.norm(vit.blocks(x))


def koleo_oracle(x):
    """-mean log distance to the nearest other sample of the L2-normalised features (sklearn)."""
    z = F.normalize(x.double(), dim=-1).numpy()
    dist, _ = NearestNeighbors(n_neighbors=2).fit(z).kneighbors(z)
    return float(-np.log(dist[:, 1] + 1e-8).mean())


@pytest.mark.parametrize("separate", [True, False])
def test_dense_loss_is_dino_plus_ibot_on_masked_patches_plus_koleo(separate):
    torch.manual_seed(0)
    m = DINO(DINOConfig(**V2, drop_path=0.0, ibot_separate_head=separate, ibot_weight=0.7, koleo_weight=0.3)).eval()
    with torch.no_grad():
        m.student_mask_token.normal_()  # a mask token unlike any patch, so masking shows
        for h in (m.criterion.center, m.ibot_criterion.center.center):
            h.normal_(0, 0.1)
    v = views()
    masks = block_masks(12, 8, seed=3)
    assert masks[:6].any() and masks.sum(dim=(1, 2)).eq(0).any()  # some images masked, some not
    c_dino, c_ibot = m.criterion.center.clone(), m.ibot_criterion.center.value.clone()
    temp = 0.05
    with torch.no_grad():
        loss, parts = m.dense_loss(v, masks, temp)

        # teacher: the full crops, no mask token
        t = m.teacher_backbone.forward_features(torch.cat(v[:2]))
        t_head, t_ibot = m.teacher_head, (m.teacher_ibot_head if separate else m.teacher_head)
        s_ibot = m.student_ibot_head if separate else m.student_head
        s = manual_student_tokens(m.student_backbone, m.student_mask_token, torch.cat(v[:2]), masks)
        student = list(m.student_head(s[:, 0]).chunk(2)) + list(m.student_head(m.student_backbone(torch.cat(v[2:]))).chunk(2))
        dino = official_dino_loss(student, list(t_head(t[:, 0]).chunk(2)), c_dino, 0.1, temp)

        t_logits, s_logits = t_ibot(t[:, 1:]), s_ibot(s[:, 1:])
        per_image = []
        for b in range(12):
            idx = masks[b].flatten().nonzero()[:, 0]
            if len(idx) == 0:
                per_image.append(torch.tensor(0.0))  # unmasked images count in the mean with 0 (DINOv2)
                continue
            q = F.softmax((t_logits[b, idx] - c_ibot) / temp, dim=-1)
            per_image.append((-q * F.log_softmax(s_logits[b, idx] / 0.1, dim=-1)).sum(-1).mean())
        ibot = torch.stack(per_image).sum() / 12
        koleo = sum(koleo_oracle(x) for x in s[:, 0].chunk(2))

    torch.testing.assert_close(parts["loss_dino"], dino, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts["loss_ibot"], ibot, rtol=1e-5, atol=1e-5)
    assert float(parts["loss_koleo"]) == pytest.approx(koleo, rel=1e-4)
    assert float(loss) == pytest.approx(float(dino) + 0.7 * float(ibot) + 0.3 * koleo, rel=1e-5)
    # iBOT's centre: EMA of the teacher's masked-patch outputs only
    want = c_ibot * 0.9 + t_logits[masks.flatten(1)].mean(0, keepdim=True) * 0.1
    torch.testing.assert_close(m.ibot_criterion.center.value, want, rtol=1e-5, atol=1e-6)


def test_masking_touches_only_the_masked_positions():
    torch.manual_seed(0)
    m = DINO(DINOConfig(**V2, drop_path=0.0)).eval()
    with torch.no_grad():
        m.student_mask_token.normal_()
    x = torch.randn(4, 3, 64, 64)
    masks = block_masks(4, 8, probability=1.0, seed=1)
    wrapped = masked_vit(m.student_backbone, m.student_mask_token)
    seq = torch.cat([torch.zeros(4, 1, dtype=torch.bool), masks.flatten(1)], dim=1)
    with torch.no_grad():
        plain, masked = wrapped.preprocess(x), wrapped.preprocess(x, mask=seq)
        changed = (plain - masked).abs().amax(-1) > 0
        assert torch.equal(changed, seq)  # CLS and unmasked patches keep their input tokens
        pos = m.student_backbone.pos_embed.expand(4, -1, -1)
        torch.testing.assert_close(masked[seq], (m.student_mask_token[0] + pos)[seq])
        # without a mask the wrapper is the same ViT as timm's (and so as the locked backbone)
        cls, patches = encode_masked(wrapped, x, None)
        ref = m.student_backbone.forward_features(x)
        torch.testing.assert_close(cls, ref[:, 0], rtol=0, atol=1e-6)
        torch.testing.assert_close(patches, ref[:, 1:], rtol=0, atol=1e-6)
    # the wrapper leaves the ViT's weights alone (lightly would re-initialise them by default)
    before = {k: v.clone() for k, v in m.student_backbone.state_dict().items()}
    masked_vit(m.student_backbone, m.student_mask_token)
    assert all(torch.equal(v, m.student_backbone.state_dict()[k]) for k, v in before.items())


def test_block_masks_follow_dinov2_and_are_a_function_of_the_seed():
    random.seed(123)
    state = random.getstate()
    masks = block_masks(64, 14, ratio=(0.1, 0.5), probability=0.5, seed=7)
    assert random.getstate() == state  # Python's global RNG untouched
    assert masks.shape == (64, 14, 14) and masks.dtype == torch.bool
    share = masks.flatten(1).float().mean(1)
    assert (share > 0).sum() == 32  # mask_sample_probability 0.5: half the images
    assert share.max() <= 0.5 + 1e-6 and share[share > 0].min() >= 0.05
    assert share[share > 0].std() > 0.05  # a ratio per image, spread over the range
    assert torch.equal(masks, block_masks(64, 14, seed=7)) and not torch.equal(masks, block_masks(64, 14, seed=8))
    # blocks: rectangles of >= 4 patches (only the last, filling block of an image may be smaller),
    # so nearly every masked patch has a masked 4-neighbour, unlike independent per-patch masking
    def with_neighbour(mk):
        nb = F.conv2d(mk.float()[:, None], torch.tensor([[[[0.0, 1, 0], [1, 0, 1], [0, 1, 0]]]]), padding=1)[:, 0]
        return float((nb[mk] > 0).float().mean())

    bernoulli = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0)) < share[:, None, None]
    assert with_neighbour(masks) > 0.95 and with_neighbour(bernoulli) < 0.8


def test_config_is_checked_and_a_dino_record_is_unchanged():
    for bad in (dict(recipe="dinov3"), dict(recipe="dinov2", mask_ratio=(0.5, 0.1)),
                dict(recipe="dinov2", mask_ratio=(0.0, 0.5)), dict(recipe="dinov2", mask_probability=0.0),
                dict(recipe="dinov2", ibot_weight=-1.0)):
        with pytest.raises(AlanError):
            DINOConfig(**bad)
    assert "recipe" not in DINOConfig().to_dict() and "mask_ratio" not in DINOConfig().to_dict()
    d = DINOConfig(recipe="dinov2").to_dict()
    assert d["recipe"] == "dinov2" and d["ibot_weight"] == 1.0 and d["koleo_weight"] == 0.1
    assert d["mask_ratio"] == (0.1, 0.5) and d["mask_probability"] == 0.5 and d["ibot_separate_head"] is True
    # the dino recipe builds exactly the modules it always had
    names = {k.split(".")[0] for k in DINO(DINOConfig(**TINY)).state_dict()}
    assert names == {"student_backbone", "teacher_backbone", "student_head", "teacher_head", "criterion",
                     "data_mean", "data_std"}


def test_optimiser_trains_the_mask_token_and_the_ibot_head_not_the_teacher():
    m = DINO(DINOConfig(**V2))
    opt = m.configure_optimizers()
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(m.student_mask_token) in trained
    assert all(id(p) in trained for n, p in m.student_ibot_head.named_parameters() if p.requires_grad)
    assert not any(id(p) in trained for p in m.teacher_ibot_head.parameters())
    assert all(torch.equal(v, m.teacher_ibot_head.state_dict()[k]) for k, v in m.student_ibot_head.state_dict().items())


# ---------------------------------------------------------------- learning, resume, artifact
def test_dinov2_steps_lower_the_loss_against_a_fixed_teacher(tmp_path):
    cfg = DINOConfig(**V2, lr=0.05, warmup_epochs=0, momentum_teacher=1.0, center_momentum=1.0, drop_path=0.0,
                     koleo_weight=0.0)
    train_dino(distinct_records(), cfg, options(max_steps=40, batch_size=16), tmp_path / "run")
    log = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv").dropna(subset=["loss"])
    assert len(log) == 40
    for col in ("loss", "loss_ibot", "loss_dino"):
        x = log[col].to_numpy()
        assert x[-8:].mean() < 0.85 * x[:8].mean(), col
    assert 0.05 < log["masked_share"].mean() < 0.3  # half the crops, 10-50 % of their patches


@pytest.mark.parametrize("kill", [5])
def test_dinov2_resume_repeats_the_uninterrupted_run(tmp_path, kill):
    a, b = full_and_resumed(tmp_path, DINOConfig(**V2, lr=0.05), 10, kill)  # drop-path on, masks drawn per step
    assert "ibot_criterion.center.center" in a and "student_mask_token" in a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_dinov2_artifact_is_the_teacher_vit_and_loads_like_a_dino_one(tmp_path):
    module, _, digest = train_dino(records(), DINOConfig(**V2), options(max_steps=2), tmp_path / "run", tmp_path / "bb",
                                   format="memory")
    bb = load_backbone(tmp_path / "bb")
    assert bb.hash == digest and bb.config.arch == "vit_micro_p8_64"
    meta = bb.config.meta["dino"]
    assert meta["recipe"] == "dinov2" and meta["mask_ratio"] == [0.1, 0.5] and meta["koleo_weight"] == 0.1
    teacher = module.teacher_backbone.state_dict()
    assert set(bb.vit.state_dict()) == set(teacher)  # no mask token, no iBOT head
    assert all(torch.equal(v, teacher[k]) for k, v in bb.vit.state_dict().items())
    cls, patches = bb(torch.rand(2, 64, 64))
    assert cls.shape == (2, 64) and patches.shape == (2, 64, 64)
    # the run's last.ckpt imports as the same teacher
    again = import_backbone(tmp_path / "run" / "checkpoints" / "last.ckpt", "vit_micro_p8_64")
    assert all(torch.equal(v, teacher[k]) for k, v in again.vit.state_dict().items())
    # resuming this run as a dino run is refused in one line (another model)
    opts = options(max_steps=4)
    opts.resume = True
    with pytest.raises(DataError, match="another model"):
        train_dino(records(), DINOConfig(**TINY), opts, tmp_path / "run")


def test_cli_recipe_dinov2_and_its_errors(tmp_path, run_cli):
    data = write_echonet(tmp_path / "echonet")
    args = ["dino", "train", "--data", str(data), "--arch", "vit_micro_p8_64", "--out-dim", "32", "--n-local", "2",
            "--batch-size", "4", "--max-steps", "2", "--no-progress", "--accelerator", "cpu", "--devices", "1"]
    r = run_cli(*args, "--recipe", "dinov2", "--mask-ratio", "0.2", "0.4", "--koleo-weight", "0",
                "--ibot-shared-head", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    bb = load_backbone(tmp_path / "run")
    d = bb.config.meta["dino"]
    assert bb.hash in r.stdout and d["recipe"] == "dinov2" and d["mask_ratio"] == [0.2, 0.4]
    assert d["koleo_weight"] == 0.0 and d["ibot_separate_head"] is False and d["ibot_weight"] == 1.0
    for bad in (["--ibot-weight", "2"], ["--recipe", "dinov2", "--mask-ratio", "0.6", "0.2"], ["--recipe", "dinov3"]):
        r = run_cli(*args, "--out", str(tmp_path / "bad"), *bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "bad").exists()
