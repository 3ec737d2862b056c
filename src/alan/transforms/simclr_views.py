"""SimCLR views as one batched tensor operation (SSCL paper, section 5.1).

The paper augments with "random crop, contrast, vertical and horizontal flipping, and rotation".
Here the crop, both flips and the rotation are composed into one affine map per sample and applied
to the whole batch with a single `grid_sample`; contrast is one fused per-sample blend. Every sample
draws its own parameters, so a batch of B images costs one kernel launch per step, not B PIL calls.

The paper gives no magnitudes; the defaults below are the usual SimCLR ones adapted to grayscale
MR (no colour jitter, grayscale or blur): crop area in [0.25, 1] of the image with aspect ratio in
[3/4, 4/3] (torchvision `RandomResizedCrop`), contrast factor in [0.5, 1.5] (torchvision
`adjust_contrast`: blend with the image mean), flips with probability 0.5 each, rotation uniform in
[-30, 30] degrees. Pixels that fall outside the image after the map are zero (MR background).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class ViewParams:
    """Per-sample parameters of one view, each a tensor of shape (B,).

    The crop is given in normalised coordinates ([-1, 1] spans the image): centre (cx, cy) and
    half-extent (w, h), so w = h = 1 with centre 0 is the whole image.
    """

    cx: torch.Tensor
    cy: torch.Tensor
    w: torch.Tensor
    h: torch.Tensor
    angle: torch.Tensor  # degrees, counter-clockwise as seen on screen
    hflip: torch.Tensor  # bool
    vflip: torch.Tensor  # bool
    contrast: torch.Tensor  # factor; 1 = unchanged

    @classmethod
    def identity(cls, batch: int) -> ViewParams:
        z, o = torch.zeros(batch), torch.ones(batch)
        f = torch.zeros(batch, dtype=torch.bool)
        return cls(cx=z, cy=z.clone(), w=o, h=o.clone(), angle=z.clone(), hflip=f, vflip=f.clone(), contrast=o.clone())


@dataclass
class SimCLRViews:
    """Random SimCLR views of a batch (B, C, H, W) float in [0, 1] -> (B, C, size, size)."""

    size: int | None = None
    min_scale: float = 0.25
    max_scale: float = 1.0
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    contrast: float = 0.5
    hflip_prob: float = 0.5
    vflip_prob: float = 0.5
    rotation: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {self.min_scale}, {self.max_scale}")

    def config(self) -> dict:
        return asdict(self)

    def sample(self, batch: int, generator: torch.Generator | None = None) -> ViewParams:
        """Draw independent parameters for `batch` samples (on the CPU, from `generator`)."""

        def u(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(batch, generator=generator)

        area = u(self.min_scale, self.max_scale)
        log_r = u(math.log(self.ratio[0]), math.log(self.ratio[1]))
        r = torch.exp(log_r)
        # half-extents in normalised units: area fraction = w * h, aspect w / h = r.
        w = torch.sqrt(area * r).clamp(max=1.0)
        h = torch.sqrt(area / r).clamp(max=1.0)
        cx = (1 - w) * u(-1.0, 1.0)
        cy = (1 - h) * u(-1.0, 1.0)
        return ViewParams(
            cx=cx, cy=cy, w=w, h=h,
            angle=u(-self.rotation, self.rotation),
            hflip=torch.rand(batch, generator=generator) < self.hflip_prob,
            vflip=torch.rand(batch, generator=generator) < self.vflip_prob,
            contrast=u(1 - self.contrast, 1 + self.contrast),
        )

    def apply(self, x: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """Apply fixed parameters `p` to the batch `x` (B, C, H, W) float."""
        b, c, hgt, wid = x.shape
        size = (self.size or hgt, self.size or wid)
        dev, dt = x.device, x.dtype if x.is_floating_point() else torch.float32
        x = x.to(dt)
        # output coords u -> input coords: centre + diag(w, h) @ diag(flips) @ R @ u
        theta = torch.deg2rad(p.angle.to(dev, dt))
        cos, sin = torch.cos(theta), torch.sin(theta)
        # y grows downwards; this R turns the content counter-clockwise on screen for angle > 0.
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
        fx = torch.where(p.hflip.to(dev), -1.0, 1.0).to(dt)
        fy = torch.where(p.vflip.to(dev), -1.0, 1.0).to(dt)
        scale = torch.stack([p.w.to(dev, dt) * fx, p.h.to(dev, dt) * fy], -1)  # (B, 2)
        a = (scale[:, :, None] * rot)[:, :, :, None, None]  # (B, 2, 2, 1, 1)
        t = torch.stack([p.cx.to(dev, dt), p.cy.to(dev, dt)], -1)[:, :, None, None]  # (B, 2, 1, 1)
        # F.affine_grid's sampling grid (align_corners=False) by broadcasting: cheaper than its bmm
        u = ((torch.arange(size[1], device=dev, dtype=dt) * 2 + 1) / size[1] - 1).view(1, 1, -1)
        v = ((torch.arange(size[0], device=dev, dtype=dt) * 2 + 1) / size[0] - 1).view(1, -1, 1)
        grid = (a[:, :, 0] * u + a[:, :, 1] * v + t).permute(0, 2, 3, 1)  # (B, H, W, 2)
        y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        k = p.contrast.to(dev, dt).view(b, 1, 1, 1)
        mean = y.mean(dim=(1, 2, 3), keepdim=True)
        return y.mul_(k).add_((1 - k) * mean).clamp_(0.0, 1.0)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random view per sample."""
        return self.apply(x, self.sample(x.shape[0], generator))

    def pair(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent random views of each sample (the SimCLR positive pair)."""
        both = self.apply(torch.cat([x, x]), self.sample(2 * x.shape[0], generator))
        return both[: x.shape[0]], both[x.shape[0]:]


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [0, 1]; float input is returned as float32 unchanged."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


__all__ = ["SimCLRViews", "ViewParams", "to_unit_float"]
