"""Batched DINO multi-crop: shapes, crop scales, per-sample determinism, oracles for each op."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from alan.transforms import MultiCrop, counter_uniform, crop_boxes, default_local_size, gaussian_blur, sample_keys

OFF = dict(hflip=0.0, jitter=0.0, blur=(0.0, 0.0, 0.0), solarize=0.0)


def frames(b=6, h=40, w=40, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (b, 1, h, w), dtype=np.uint8))


def test_shapes_range_and_view_count():
    mc = MultiCrop(global_size=32, local_size=16, n_local=3)
    views = mc(frames(), keys=torch.arange(6))
    assert len(views) == 5 == mc.n_views
    assert [tuple(v.shape) for v in views] == [(6, 1, 32, 32)] * 2 + [(6, 1, 16, 16)] * 3
    assert all(v.dtype == torch.float32 and v.min() >= 0 and v.max() <= 1 for v in views)
    assert len(mc(frames()[:, 0])) == 5  # (B, H, W) input too


def test_local_size_follows_dino_ratio():
    assert default_local_size(224, 8) == 96 and default_local_size(112, 8) == 48 and default_local_size(112, 4) == 48


def test_crop_scales_and_ratios_stay_in_range():
    mc = MultiCrop(global_size=32, local_size=16, n_local=4)
    boxes = mc.boxes(torch.arange(2000), 60, 60).double()
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    frac = w * h / 3600
    assert ((boxes[..., :2] >= 0) & (boxes[..., 2:] <= 60)).all()
    slack = 2 * 61 / 3600  # integer rounding of w and h
    assert frac[:2].min() >= 0.4 - slack and frac[:2].max() <= 1.0
    assert frac[2:].min() >= 0.05 - slack and frac[2:].max() <= 0.4 + slack
    # the scale is uniform within its range (torchvision's RandomResizedCrop), ratio within (3/4, 4/3) up to rounding
    assert abs(frac[2:].mean().item() - 0.225) < 0.01
    r = (w / h)[2:]
    assert r.min() > 0.75 * 0.85 and r.max() < 4 / 3 / 0.85


def test_crop_falls_back_to_the_whole_image_when_no_attempt_fits():
    u = torch.zeros(3, 30)
    u[:, 0:20:2] = 1.0  # area fraction 1 with ratio 3/4 never fits a square image
    u[:, 1:20:2] = 0.0
    assert crop_boxes(u, 20, 20, (1.0, 1.0), (3 / 4, 4 / 3)).tolist() == [[0, 0, 20, 20]] * 3


def test_identity_crop_reproduces_the_frame():
    x = frames(2, 24, 24)
    mc = MultiCrop(global_size=24, n_local=0, global_scale=(1.0, 1.0), ratio=(1.0, 1.0), **OFF)
    for v in mc(x, keys=torch.arange(2)):
        torch.testing.assert_close(v, x.float() / 255, atol=1e-6, rtol=0)


def test_upsampling_crop_matches_bilinear_interpolation_inside():
    x = frames(4, 40, 40).float() / 255
    mc = MultiCrop(global_size=48, n_local=0, **OFF)
    keys = torch.arange(4)
    views = mc(x, keys=keys)
    boxes = mc.boxes(keys, 40, 40).long()
    for v in range(2):
        for b in range(4):
            x1, y1, x2, y2 = boxes[v, b].tolist()
            ref = F.interpolate(x[b:b + 1, :, y1:y2, x1:x2], size=(48, 48), mode="bilinear", align_corners=False)
            # roi_align samples neighbours outside the box at the border; compare the interior
            torch.testing.assert_close(views[v][b:b + 1, :, 3:-3, 3:-3], ref[..., 3:-3, 3:-3], atol=1e-5, rtol=0)


def test_flip_jitter_solarise_against_plain_formulas():
    x = frames(64, 16, 16, seed=1).float() / 255
    keys = torch.arange(64)
    base = MultiCrop(global_size=16, n_local=0, global_scale=(1.0, 1.0), ratio=(1.0, 1.0), **OFF)
    full = MultiCrop(global_size=16, n_local=0, global_scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.5, jitter=0.8,
                     blur=(0.0, 0.0, 0.0), solarize=0.2)
    plain, aug = base(x, keys), full(x, keys)
    u = full.draws(keys)
    n_flip = n_jit = n_sol = 0
    for v in range(2):
        for b in range(64):
            y = plain[v][b]
            uu = u[v, b]
            if uu[22] < 0.5:
                y, n_flip = y.flip(-1), n_flip + 1
            if uu[23] < 0.8:
                n_jit += 1
                bf, cf = 1 + 0.4 * (2 * uu[24] - 1), 1 + 0.4 * (2 * uu[25] - 1)
                bright = lambda t: (t * bf).clamp(0, 1)  # noqa: E731  torchvision adjust_brightness
                contr = lambda t: (cf * t + (1 - cf) * t.mean()).clamp(0, 1)  # noqa: E731  adjust_contrast
                y = contr(bright(y)) if uu[26] < 0.5 else bright(contr(y))
            if v == 1 and uu[29] < 0.2:
                y, n_sol = torch.where(y >= 0.5, 1 - y, y), n_sol + 1
            torch.testing.assert_close(aug[v][b], y, atol=1e-6, rtol=0)
    assert 30 < n_flip < 98 and 80 < n_jit < 125 and 3 < n_sol < 25


def test_gaussian_blur_matches_scipy():
    x = torch.rand(3, 1, 20, 24, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.5, 1.3, 0.0])
    y = gaussian_blur(x, sigma, radius=6)
    for i, s in enumerate(sigma.tolist()):
        ref = x[i, 0].numpy() if s == 0 else gaussian_filter(x[i, 0].numpy().astype(np.float64), s, mode="mirror", truncate=6 / s)
        np.testing.assert_allclose(y[i, 0].numpy(), ref, atol=1e-5)


def test_same_key_same_views_whatever_the_batch():
    mc = MultiCrop(global_size=32, local_size=16, n_local=2)
    x = frames(8)
    keys = sample_keys(3, 1, torch.arange(8))
    full = mc(x, keys)
    part = mc(x[[5, 2]], keys[[5, 2]])
    for a, b in zip(full, part):
        torch.testing.assert_close(a[[5, 2]], b)
    again = mc(x, keys)
    assert all(torch.equal(a, b) for a, b in zip(full, again))
    other = mc(x, sample_keys(3, 2, torch.arange(8)))  # next epoch: new crops
    assert not torch.equal(full[0], other[0])


def test_generator_seed_determinism():
    mc = MultiCrop(global_size=32, local_size=16, n_local=2)
    x = frames(4)
    a = mc(x, generator=torch.Generator().manual_seed(7))
    b = mc(x, generator=torch.Generator().manual_seed(7))
    c = mc(x, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and not torch.equal(a[0], c[0])


def test_counter_uniform_is_uniform_and_independent():
    u = counter_uniform(torch.arange(50_000), 4).double()
    assert ((u >= 0) & (u < 1)).all()
    assert torch.allclose(u.mean(0), torch.full((4,), 0.5, dtype=torch.float64), atol=0.01)
    assert torch.allclose(u.var(0), torch.full((4,), 1 / 12, dtype=torch.float64), atol=0.003)
    c = torch.corrcoef(u.T)
    assert (c - torch.eye(4, dtype=torch.float64)).abs().max() < 0.02
    # neighbouring keys are unrelated
    assert abs(torch.corrcoef(torch.stack([u[:-1, 0], u[1:, 0]]))[0, 1]) < 0.02
    assert math.isclose(float((u[:, 0] < 0.2).double().mean()), 0.2, abs_tol=0.01)


@pytest.mark.parametrize("size", [12, 40])
def test_blur_probabilities_per_view(size):
    mc = MultiCrop(global_size=size, local_size=size // 2, n_local=2, hflip=0, jitter=0, solarize=0,
                   global_scale=(1.0, 1.0), local_scale=(1.0, 1.0), ratio=(1.0, 1.0), blur=(1.0, 0.0, 0.0))
    x = frames(5, size, size)
    v = mc(x, keys=torch.arange(5))
    ident = x.float() / 255
    assert not torch.allclose(v[0], ident, atol=1e-3)  # view 1 always blurred
    torch.testing.assert_close(v[1], ident, atol=1e-6, rtol=0)  # view 2 never
