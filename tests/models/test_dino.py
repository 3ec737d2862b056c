"""DINO: loss vs the official formula, recipe details (schedules, decay groups, clipping, freezing,
EMA), learning on tiny data, exact resume, and `alan dino train` end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss

from alan.models.backbones import load_backbone
from alan.models.dino import DINO, DINOConfig, _Plan, train_dino
from alan.records import Record
from alan.training import RunOptions

TINY = dict(arch="vit_micro_p8_64", out_dim=64, hidden_dim=32, bottleneck_dim=16, n_local=2)


def records(n=6, t=8, size=64, seed=0):
    """Moving discs on noise: n videos of t frames."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        frames = []
        for k in range(t):
            r = 10 + 5 * np.sin(2 * np.pi * k / t) + i
            disc = (xx - size / 2 - i) ** 2 + (yy - size / 2) ** 2 < r * r
            frames.append((disc * 200 + rng.integers(0, 40, (size, size))).astype(np.uint8))
        v = np.stack(frames)
        out.append(Record(id=f"v{i}", load_frames=lambda v=v: v, n_frames=t, height=size, width=size, split="train"))
    return out


def options(**kw):
    base = dict(max_epochs=100, batch_size=8, progress=False, checkpoint_every_n_steps=None, log_every_n_steps=1,
                accelerator="cpu", devices=1)
    return RunOptions(**{**base, **kw})


# ---------------------------------------------------------------- loss
def official_dino_loss(student_output, teacher_output, center, student_temp, teacher_temp):
    """facebookresearch/dino main_dino.py DINOLoss.forward, restated on lists of views."""
    student_out = [s / student_temp for s in student_output]
    teacher_out = [F.softmax((t - center) / teacher_temp, dim=-1) for t in teacher_output]
    total, n = 0.0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
            n += 1
    return total / n


def test_lightly_loss_matches_the_official_formula():
    g = torch.Generator().manual_seed(0)
    teacher = [torch.randn(5, 32, generator=g) for _ in range(2)]
    student = [torch.randn(5, 32, generator=g) for _ in range(6)]
    center = torch.randn(1, 32, generator=g) * 0.1
    loss_fn = DINOLoss(output_dim=32, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(center[None])
    got = loss_fn(teacher, student, teacher_temp=0.05)
    want = official_dino_loss(student, teacher, center, 0.1, 0.05)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # centre update: EMA of the teacher outputs' batch mean
    new_center = center * 0.9 + torch.cat(teacher).mean(0, keepdim=True) * 0.1
    torch.testing.assert_close(loss_fn.center[0], new_center, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- recipe details
def official_cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0.0):
    """facebookresearch/dino utils.cosine_scheduler."""
    warmup_iters = warmup_epochs * niter_per_ep
    warm = np.linspace(start_warmup_value, base, warmup_iters) if warmup_epochs > 0 else np.array([])
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    return np.concatenate((warm, final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))))


def test_schedules_follow_the_official_recipe():
    m = DINO(DINOConfig(**TINY, warmup_epochs=10, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=30))
    m.plan = _Plan(total=1000, per_epoch=10, lr=5e-4 * 512 / 256, lr_warmup=100, temp_warmup_epochs=30, freeze=10)
    s = [m.schedule(i) for i in range(1000)]
    lr = np.array([x["lr"] for x in s])
    ref = official_cosine_scheduler(1e-3, 1e-6, 100, 10, warmup_epochs=10)
    # lightly's warm-up reaches the peak one step earlier and its cosine spans N-1 steps
    assert np.abs(lr - ref).max() <= 1e-3 * (1 / 100 + math.pi / 900)
    assert lr.max() == pytest.approx(1e-3) and lr[-1] == pytest.approx(1e-6) and lr.argmax() == 99
    wd = np.array([x["wd"] for x in s])
    assert wd[0] == pytest.approx(0.04) and wd[-1] == pytest.approx(0.4) and (np.diff(wd) >= 0).all()
    mom = np.array([x["momentum"] for x in s])
    assert mom[0] == pytest.approx(0.996) and mom[-1] == pytest.approx(1.0) and (np.diff(mom) >= 0).all()
    temp = np.array([x["teacher_temp"] for x in s])
    assert temp[0] == pytest.approx(0.04) and temp[150] == pytest.approx(0.04 + 0.03 * 15 / 30)
    assert (temp[300:] == 0.07).all()


def test_momentum_and_weight_decay_are_official_cosines():
    m = DINO(DINOConfig(**TINY))
    m.plan = _Plan(total=500, per_epoch=5, lr=1e-3, lr_warmup=0, temp_warmup_epochs=0, freeze=0)
    steps = np.arange(500)
    # official: final + 0.5 (base - final)(1 + cos(pi i / N)); lightly's cosine spans N - 1 steps
    for name, base, final in (("momentum", 0.996, 1.0), ("wd", 0.04, 0.4)):
        got = np.array([m.schedule(int(i))[name] for i in steps])
        ref = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / 499))
        np.testing.assert_allclose(got, ref, atol=1e-12)


def test_no_weight_decay_on_biases_and_1d_params_and_frozen_head_scale():
    m = DINO(DINOConfig(**TINY))
    opt = m.configure_optimizers()
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in m.named_parameters()}
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0
    assert all(p.ndim > 1 and not names[id(p)].endswith(".bias") for p in decay["params"])
    assert all(p.ndim == 1 or names[id(p)].endswith(".bias") for p in no_decay["params"])
    trained = {names[id(p)] for g in opt.param_groups for p in g["params"]}
    assert not any(n.startswith("teacher") for n in trained)
    assert "student_head.last_layer.weight_g" not in trained  # norm_last_layer: the weight-norm scale is fixed
    assert "student_backbone.cls_token" in trained and "student_backbone.pos_embed" in trained


def test_per_parameter_clipping_and_last_layer_freeze():
    m = DINO(DINOConfig(**TINY, clip_grad=3.0))
    m.plan = _Plan(total=100, per_epoch=10, lr=1e-3, lr_warmup=0, temp_warmup_epochs=0, freeze=10)
    params = [p for p in m.parameters() if p.requires_grad]
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, 10.0 if i % 2 else 1e-4)
    before = {id(p): p.grad.clone() for p in params}
    m._step = 5
    m.on_before_optimizer_step(None)
    for p in params:
        if p.grad is None:
            continue
        norm0 = before[id(p)].norm()
        want = before[id(p)] * min(1.0, 3.0 / (norm0.item() + 1e-6))  # official utils.clip_gradients
        torch.testing.assert_close(p.grad, want)
    assert m.student_head.last_layer.weight_v.grad is None  # frozen during the first steps
    m.student_head.last_layer.weight_v.grad = torch.ones_like(m.student_head.last_layer.weight_v)
    m._step = 10
    m.on_before_optimizer_step(None)
    assert m.student_head.last_layer.weight_v.grad is not None


def test_teacher_starts_as_the_student_and_follows_the_ema(tmp_path):
    seen = []

    class Record_(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen.append((module.schedule(trainer.global_step - 1)["momentum"],
                         {k: v.clone() for k, v in module.student_backbone.state_dict().items()},
                         {k: v.clone() for k, v in module.teacher_backbone.state_dict().items()}))

    cfg = DINOConfig(**TINY, momentum_teacher=0.9, drop_path=0.0)
    m, _, _ = train_dino(records(), cfg, options(max_steps=3), tmp_path / "run", callbacks=(Record_(),))
    init = DINO(cfg)
    assert all(torch.equal(a, b) for a, b in zip(init.student_head.state_dict().values(), init.teacher_head.state_dict().values()))
    for (_, _, t0), (mom, s1, t1) in zip(seen, seen[1:]):
        for k in t1:
            torch.testing.assert_close(t1[k], mom * t0[k] + (1 - mom) * s1[k])


# ---------------------------------------------------------------- learning, resume
def distinct_records(n=16, size=64, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = np.kron(rng.integers(0, 256, (8, 8)), np.ones((8, 8))).astype(np.uint8)[None]
        out.append(Record(id=f"d{i}", load_frames=lambda v=img: v, n_frames=1, split="train"))
    return out


def test_student_learns_to_match_a_fixed_teacher(tmp_path):
    # with the teacher (momentum 1) and the centre (momentum 1) frozen, the DINO loss is a fixed
    # cross-entropy target: a few AdamW steps on 16 images must lower it
    cfg = DINOConfig(**TINY, lr=0.05, warmup_epochs=0, momentum_teacher=1.0, center_momentum=1.0, drop_path=0.0)
    train_dino(distinct_records(), cfg, options(max_steps=40, batch_size=16), tmp_path / "run")
    loss = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv").dropna(subset=["loss"])["loss"].to_numpy()
    assert len(loss) == 40 and loss[-8:].mean() < 0.85 * loss[:8].mean()


def test_head_batch_norm_is_the_official_use_bn_in_head(tmp_path):
    # BatchNorm after each hidden Linear of both heads; the teacher still starts as the student
    m = DINO(DINOConfig(**TINY, head_batch_norm=True))
    for head in (m.student_head, m.teacher_head):
        assert sum(isinstance(x, torch.nn.BatchNorm1d) for x in head.modules()) == 2
    assert all(torch.equal(v, m.teacher_head.state_dict()[k]) for k, v in m.student_head.state_dict().items())
    cfg = DINOConfig(**TINY, head_batch_norm=True, lr=0.05, warmup_epochs=0, momentum_teacher=1.0,
                     center_momentum=1.0, drop_path=0.0)
    train_dino(distinct_records(), cfg, options(max_steps=40, batch_size=16), tmp_path / "run")
    loss = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv").dropna(subset=["loss"])["loss"].to_numpy()
    assert loss[-8:].mean() < 0.85 * loss[:8].mean()


class Killed(Exception):
    pass


class KillAt(L.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Killed


def full_and_resumed(tmp_path, cfg: DINOConfig, max_steps: int, kill: int):
    """State dicts of an uninterrupted run and of one killed at step `kill` then resumed (checkpoints every 4)."""
    recs, opts = records(), options(max_steps=max_steps, checkpoint_every_n_steps=4)
    full, _, _ = train_dino(recs, cfg, opts, tmp_path / "full")
    with pytest.raises(Killed):
        train_dino(recs, cfg, opts, tmp_path / "cut", callbacks=(KillAt(kill),))
    opts.resume = True
    resumed, trainer, _ = train_dino(recs, cfg, opts, tmp_path / "cut")
    assert trainer.global_step == max_steps
    return full.state_dict(), resumed.state_dict()


@pytest.mark.parametrize("kill", [5, 7])  # after the step-4 checkpoint (mid-epoch) / after the epoch-end one (6)
def test_resume_repeats_the_uninterrupted_run(tmp_path, kill):
    a, b = full_and_resumed(tmp_path, DINOConfig(**TINY, lr=0.05), 14, kill)  # 48 frames, 6 steps/epoch, drop-path on
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


# ---------------------------------------------------------------- artifact and CLI
def test_artifact_records_data_and_options(tmp_path):
    recs = records()
    cfg = DINOConfig(**TINY)
    module, _, digest = train_dino(recs, cfg, options(max_steps=2), tmp_path / "run", tmp_path / "bb",
                                   format="memory", command="alan dino train --test")
    bb = load_backbone(tmp_path / "bb")
    frames = np.concatenate([r.frames for r in recs]).astype(np.float64) / 255
    assert bb.hash == digest and bb.config.command == "alan dino train --test"
    assert bb.config.mean == pytest.approx([frames.mean()] * 3) and bb.config.std == pytest.approx([frames.std()] * 3)
    assert len(bb.config.data_fingerprint) == 64 and bb.config.meta["data"]["frames"] == 48
    assert bb.config.meta["dino"]["out_dim"] == 64 and bb.config.meta["run"]["batch_size"] == 8
    teacher = module.teacher_backbone.state_dict()
    assert all(torch.equal(v, teacher[k]) for k, v in bb.vit.state_dict().items())
    stats = json.loads((tmp_path / "run" / "data_stats.json").read_text())
    assert stats["fingerprint"] == bb.config.data_fingerprint


def write_echonet(root: Path, n=3, t=6, size=64, seed=0) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    (root / "Videos").mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"0X{i:04d}"
        w = cv2.VideoWriter(str(root / "Videos" / f"{name}.avi"), cv2.VideoWriter_fourcc(*"FFV1"), 50, (size, size), True)
        for _ in range(t):
            w.write(cv2.cvtColor(rng.integers(0, 256, (size, size), dtype=np.uint8), cv2.COLOR_GRAY2BGR))
        w.release()
        rows.append([name, 55, 30, 70, size, size, 50, t, "TRAIN" if i < n - 1 else "VAL"])
    with open(root / "FileList.csv", "w", newline="") as f:
        csv.writer(f).writerows([["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"], *rows])
    (root / "VolumeTracings.csv").write_text("FileName,X1,Y1,X2,Y2,Frame\n")
    return root



def test_cli_train_on_an_echonet_folder_and_errors(tmp_path, run_cli):
    data = write_echonet(tmp_path / "echonet")
    args = ["dino", "train", "--data", str(data), "--arch", "vit_micro_p8_64", "--out-dim", "32", "--n-local", "2",
            "--batch-size", "4", "--max-steps", "2", "--no-progress", "--accelerator", "cpu", "--devices", "1"]
    r = run_cli(*args, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    bb = load_backbone(tmp_path / "run")  # run folder holding backbone/
    assert bb.hash in r.stdout and bb.config.meta["data"]["format"] == "echonet"
    assert bb.config.meta["data"]["records"] == 2 and bb.config.meta["data"]["frames"] == 12  # TRAIN only
    assert bb.config.command.startswith("alan dino train --data")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    for bad in (["--split", "test"], ["--arch", "vit_nope"], ["--batch-size", "64"]):
        r = run_cli(*args, "--out", str(tmp_path / "bad"), *bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    # the run's last.ckpt imports as a backbone (teacher by default), with the run's mean/std
    r = run_cli("backbone", "import", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--arch", "vit_micro_p8_64",
                "--out", str(tmp_path / "from_ckpt"))
    assert r.returncode == 0, r.stderr
    again = load_backbone(tmp_path / "from_ckpt")
    assert again.config.mean == pytest.approx(bb.config.mean)
    assert all(torch.equal(v, bb.vit.state_dict()[k]) for k, v in again.vit.state_dict().items())


def test_cli_trains_on_the_frames_of_several_datasets(tmp_path, run_cli):
    a, b = write_echonet(tmp_path / "a"), write_echonet(tmp_path / "b", n=4, seed=1)
    args = ["dino", "train", "--data", str(a), "--data", str(b), "--arch", "vit_micro_p8_64", "--out-dim", "32",
            "--hidden-dim", "16", "--bottleneck-dim", "8", "--head-batch-norm", "--n-local", "2", "--batch-size", "4",
            "--max-steps", "2", "--no-progress", "--accelerator", "cpu", "--devices", "1"]
    r = run_cli(*args, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    meta = load_backbone(tmp_path / "run").config.meta
    assert meta["data"]["records"] == 2 + 3 and meta["data"]["frames"] == 6 * 5
    assert meta["data"]["format"] == "echonet+echonet" and meta["data"]["root"] == [str(a), str(b)]
    assert meta["dino"]["head_batch_norm"] is True and meta["dino"]["hidden_dim"] == 16
    r = run_cli(*args, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "missing" in r.stderr and not (tmp_path / "bad" / "backbone").exists(), r.stderr
