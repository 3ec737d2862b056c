"""Batched SimCLR views against torch / torchvision per-image operations."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF

from alan.transforms.simclr_views import SimCLRViews, ViewParams, to_unit_float


def _img(b=3, s=16, seed=0):
    return torch.rand(b, 1, s, s, generator=torch.Generator().manual_seed(seed))


def test_identity_params_return_input():
    x = _img()
    y = SimCLRViews().apply(x, ViewParams.identity(3))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("flag,dim", [("hflip", -1), ("vflip", -2)])
def test_flips_match_torch_flip_per_sample(flag, dim):
    x = _img(4)
    p = ViewParams.identity(4)
    mask = torch.tensor([True, False, True, False])
    setattr(p, flag, mask)
    y = SimCLRViews().apply(x, p)
    for i in range(4):
        want = torch.flip(x[i], dims=[dim]) if mask[i] else x[i]
        torch.testing.assert_close(y[i], want, atol=1e-5, rtol=0)


def test_rotation_90_matches_rot90_counter_clockwise():
    x = _img(2)
    p = ViewParams.identity(2)
    p.angle = torch.tensor([90.0, -90.0])
    y = SimCLRViews().apply(x, p)
    torch.testing.assert_close(y[0], torch.rot90(x[0], 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[1], torch.rot90(x[1], -1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_rotation_small_angle_matches_torchvision_interior():
    x = _img(1, 32)
    p = ViewParams.identity(1)
    p.angle = torch.tensor([20.0])
    y = SimCLRViews().apply(x, p)
    want = TF.rotate(x[0], 20.0, interpolation=TF.InterpolationMode.BILINEAR)
    # the border differs only by how each fills outside pixels; compare the central disc
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    inside = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2) < 12**2
    assert (y[0, 0][inside] - want[0][inside]).abs().max() < 1e-4


def test_crop_matches_torchvision_resized_crop_per_sample():
    x = _img(2, 20)
    boxes = [(2, 5, 10, 12), (0, 0, 20, 8)]  # top, left, height, width (pixels)
    out = 16
    p = ViewParams.identity(2)
    s = 20
    p.cx = torch.tensor([-1 + (2 * l + w) / s for t, l, h, w in boxes])
    p.cy = torch.tensor([-1 + (2 * t + h) / s for t, l, h, w in boxes])
    p.w = torch.tensor([w / s for t, l, h, w in boxes])
    p.h = torch.tensor([h / s for t, l, h, w in boxes])
    y = SimCLRViews(size=out).apply(x, p)
    assert y.shape == (2, 1, out, out)
    for i, (t, l, h, w) in enumerate(boxes):
        want = TF.resized_crop(x[i], t, l, h, w, [out, out], interpolation=TF.InterpolationMode.BILINEAR,
                               antialias=False)
        # edge pixels: torchvision clamps to the crop, grid_sample blends with the outside
        torch.testing.assert_close(y[i, :, 1:-1, 1:-1], want[:, 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_contrast_matches_torchvision_adjust_contrast():
    x = _img(3) * 0.8
    p = ViewParams.identity(3)
    p.contrast = torch.tensor([0.5, 1.0, 1.4])
    y = SimCLRViews().apply(x, p)
    for i in range(3):
        want = TF.adjust_contrast(x[i], float(p.contrast[i]))
        torch.testing.assert_close(y[i], want, atol=1e-5, rtol=0)


def test_sampled_params_within_ranges_and_per_sample():
    v = SimCLRViews(min_scale=0.3, max_scale=0.9, contrast=0.4, rotation=15, hflip_prob=0.5)
    p = v.sample(2000, torch.Generator().manual_seed(0))
    area = p.w * p.h
    assert area.min() >= 0.3 - 1e-6 and area.max() <= 0.9 + 1e-6
    assert ((p.cx.abs() + p.w) <= 1 + 1e-6).all() and ((p.cy.abs() + p.h) <= 1 + 1e-6).all()
    assert p.angle.abs().max() <= 15 and p.angle.std() > 5
    assert ((p.contrast >= 0.6) & (p.contrast <= 1.4)).all()
    assert 0.4 < p.hflip.float().mean() < 0.6
    ratio = p.w / p.h
    assert ratio.min() >= 3 / 4 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4


def test_pair_views_differ_and_generator_is_reproducible():
    x = _img(4, 24)
    v = SimCLRViews()
    a0, a1 = v.pair(x, torch.Generator().manual_seed(1))
    b0, b1 = v.pair(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a0, b0)
    torch.testing.assert_close(a1, b1)
    assert not torch.allclose(a0, a1)
    assert a0.shape == x.shape and float(a0.min()) >= 0 and float(a0.max()) <= 1


def test_to_unit_float():
    x = torch.tensor([0, 255], dtype=torch.uint8)
    assert to_unit_float(x).tolist() == [0.0, 1.0]
    assert math.isclose(float(to_unit_float(torch.tensor([0.25]))), 0.25)
