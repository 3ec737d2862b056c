"""SimCLR module: the NT-Xent loss against the SimCLR formula, and a short real Lightning fit."""

import math

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch.utils.data import DataLoader

from alan.models.encoders import create_encoder
from alan.models.simclr import SimCLR
from alan.training import RunOptions, fit


def nt_xent_plain(z0: np.ndarray, z1: np.ndarray, tau: float) -> float:
    """SimCLR eq. (1), written out: mean over all 2N anchors of -log softmax of its positive."""
    z = np.concatenate([z0, z1]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        denom = sum(math.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(z[i] @ z[j] / tau) / denom)
    return total / n2


@pytest.mark.parametrize("n,d", [(2, 3), (7, 16)])
def test_nt_xent_matches_simclr_formula(n, d):
    enc = create_encoder("vgg_tiny", img_size=32)
    module = SimCLR(enc)
    assert module.criterion.temperature == 0.1
    g = torch.Generator().manual_seed(n)
    z0, z1 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    got = float(module.criterion(z0, z1))
    assert got == pytest.approx(nt_xent_plain(z0.numpy(), z1.numpy(), 0.1), rel=1e-5)


def test_projection_head_shapes_and_optimizer_defaults():
    enc = create_encoder("densenet_tiny", img_size=16)
    m = SimCLR(enc, out_dim=32)
    assert m(torch.rand(3, 1, 16, 16)).shape == (3, 32)
    opt = m.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-4


def _blobs(n, s=32, seed=0):
    """Images with one bright disc at a random place and radius (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:s, :s]
    out = np.zeros((n, 1, s, s), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(6, s - 6, 2).tolist() + [rng.uniform(2, 6)]
        out[i, 0] = 200 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
    return torch.from_numpy(out)


class _Snapshots(Callback):
    def __init__(self):
        self.losses, self.states = {}, {}

    def on_validation_epoch_end(self, trainer, module):
        if not trainer.sanity_checking:
            self.losses[trainer.current_epoch] = float(trainer.callback_metrics["val_loss"])
            self.states[trainer.current_epoch] = {k: v.clone() for k, v in module.encoder.model.state_dict().items()}


def test_fit_keeps_best_encoder_and_resumes(tmp_path):
    torch.manual_seed(0)
    train, val = _blobs(32), _blobs(16, seed=1)
    m = SimCLR(create_encoder("vgg_tiny", img_size=32, seed=0), lr=1e-3)
    opts = RunOptions(max_epochs=3, batch_size=16, progress=False, accelerator="cpu", devices=1, loggers=("csv",))
    snap = _Snapshots()
    fit(m, opts, tmp_path, train_dataloaders=DataLoader(train, batch_size=16, shuffle=True),
        val_dataloaders=DataLoader(val, batch_size=16), callbacks=[EarlyStopping("val_loss", patience=5), snap])
    best_epoch = min(snap.losses, key=snap.losses.get)
    assert m.best_epoch == best_epoch and m.best_val_loss == pytest.approx(snap.losses[best_epoch])
    kept = m.best_encoder().model.state_dict()
    assert all(torch.equal(kept[k], snap.states[best_epoch][k]) for k in kept)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "logs" / "metrics.csv").is_file()
    # resume: a fourth epoch continues from last.ckpt and keeps the best-so-far record
    m3 = SimCLR(create_encoder("vgg_tiny", img_size=32, seed=0), lr=1e-3)
    opts.max_epochs, opts.resume = 4, True
    trainer = fit(m3, opts, tmp_path, train_dataloaders=DataLoader(train, batch_size=16),
                  val_dataloaders=DataLoader(val, batch_size=16))
    assert trainer.current_epoch == 4
    assert m3.best_val_loss is not None and m3.best_val_loss <= m.best_val_loss
