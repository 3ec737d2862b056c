"""DINO's multi-crop augmentation, batched on tensors so that it runs on the training device.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO, 2021), and the
official ``DataAugmentationDINO``: two global crops at scale (0.4, 1) and N local crops at scale
(0.05, 0.4) (local size ~0.43 x global), each with a horizontal flip (p 0.5), colour jitter
(p 0.8; brightness 0.4, contrast 0.4 -- saturation and hue do nothing on gray frames), Gaussian
blur (p 1.0 / 0.1 / 0.5 for global 1 / global 2 / locals, sigma in (0.1, 2.0) output pixels) and
solarisation (second global crop only, p 0.2).

Everything is computed for the whole batch at once: per-sample crop boxes -> one
``torchvision.ops.roi_align`` per crop size (bilinear, area-averaged when shrinking), per-sample
flips / jitter / solarisation as tensor arithmetic, per-sample Gaussian kernels as one grouped
convolution. The random parameters of a sample are a counter-based hash of its integer key (see
`counter_uniform`), so a sample's crops do not depend on the batch it is in, the device or the
number of processes: with keys derived from (seed, epoch, frame index) a run is reproducible
across resumption and DDP layouts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)

# draws per view: 10 crop attempts x (scale, log-ratio), position (2), flip, jitter (4), blur (2), solarise
_N_ATTEMPTS = 10
_D_POS = 2 * _N_ATTEMPTS
_D_FLIP, _D_JIT, _D_BRIGHT, _D_CONTR, _D_ORDER, _D_BLUR, _D_SIGMA, _D_SOLAR = range(_D_POS + 2, _D_POS + 10)
_N_DRAWS = _D_POS + 10


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix64(z: Tensor) -> Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping arithmetic)."""
    z = z + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def counter_uniform(keys: Tensor, n: int) -> Tensor:
    """(N,) int64 keys -> (N, n) float32 uniforms in [0, 1), a pure function of (key, column)."""
    z = _mix64(_mix64(keys.long())[:, None] + torch.arange(n, device=keys.device))
    return _shr(z, 40).float() * (1.0 / (1 << 24))


def sample_keys(seed: int, epoch: int, index: Tensor) -> Tensor:
    """Per-sample keys from (seed, epoch, dataset index)."""
    base = _mix64(torch.tensor([seed * 1_000_003 + epoch], dtype=torch.long, device=index.device))
    return _mix64(base + index.long())


def default_local_size(global_size: int, patch_size: int = 1) -> int:
    """DINO's local/global size ratio (96/224 ~ 0.43), rounded to a multiple of the patch size."""
    return max(patch_size, int(round(global_size * 96 / 224 / patch_size)) * patch_size)


def crop_boxes(u: Tensor, height: int, width: int, scale: tuple[float, float],
               ratio: tuple[float, float]) -> Tensor:
    """torchvision's RandomResizedCrop parameters, vectorised: (N, D) uniforms -> (N, 4) boxes (x1, y1, x2, y2).

    Up to 10 attempts of (area fraction in `scale`, log-uniform aspect ratio in `ratio`); the first
    that fits is used, else the central crop of the clamped aspect ratio. Boxes are integer pixels.
    """
    area = height * width
    ua, ur = u[:, 0:_D_POS:2], u[:, 1:_D_POS:2]
    target = area * (scale[0] + ua * (scale[1] - scale[0]))
    log_r = math.log(ratio[0]) + ur * (math.log(ratio[1]) - math.log(ratio[0]))
    ar = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * ar))
    h = torch.round(torch.sqrt(target / ar))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.int(), dim=1, keepdim=True)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    any_ok = ok.any(dim=1)
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    i = torch.floor(u[:, _D_POS] * (height - h + 1)).clamp(max=height - h)
    j = torch.floor(u[:, _D_POS + 1] * (width - w + 1)).clamp(max=width - w)
    i = torch.where(any_ok, i, torch.div(height - h, 2, rounding_mode="floor"))
    j = torch.where(any_ok, j, torch.div(width - w, 2, rounding_mode="floor"))
    return torch.stack([j, i, j + w, i + h], dim=1)


def gaussian_blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Per-sample Gaussian blur: x (N, 1, H, W), sigma (N,) (0 = identity), reflect padding."""
    n, c, hh, ww = x.shape
    radius = max(0, min(radius, hh - 1, ww - 1))
    if radius == 0:
        return x
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp(min=1e-6)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)
    y = x.reshape(1, n * c, hh, ww)
    kr = k.repeat_interleave(c, dim=0)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kr[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kr[:, None, :, None], groups=n * c)
    return y.reshape(n, c, hh, ww)


class MultiCrop(nn.Module):
    """Batched DINO multi-crop for gray frames: (B, 1, H, W) or (B, H, W) -> 2 + n_local views.

    Each view is (B, 1, size, size) float in [0, 1] (global views first); standardisation and
    channel replication are left to the model. Parameters follow the official DINO recipe.
    """

    def __init__(self, global_size: int = 224, local_size: int | None = None, n_local: int = 8,
                 global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: float = 0.5, jitter: float = 0.8,
                 brightness: float = 0.4, contrast: float = 0.4, blur: tuple[float, float, float] = (1.0, 0.1, 0.5),
                 sigma: tuple[float, float] = (0.1, 2.0), solarize: float = 0.2):
        super().__init__()
        self.global_size = global_size
        self.local_size = local_size if local_size is not None else default_local_size(global_size)
        self.n_local = n_local
        self.global_scale, self.local_scale, self.ratio = tuple(global_scale), tuple(local_scale), tuple(ratio)
        self.hflip, self.jitter, self.brightness, self.contrast = hflip, jitter, brightness, contrast
        self.blur, self.sigma, self.solarize = tuple(blur), tuple(sigma), solarize

    @property
    def n_views(self) -> int:
        return 2 + self.n_local

    def extra_repr(self) -> str:
        return f"global={self.global_size}x2 scale={self.global_scale}, local={self.local_size}x{self.n_local} scale={self.local_scale}"

    def draws(self, keys: Tensor) -> Tensor:
        """(B,) keys -> (n_views, B, D) uniforms; view v of sample b depends only on (key b, v)."""
        v = torch.arange(self.n_views, device=keys.device)
        view_keys = _mix64(keys.long())[None, :] * 64 + v[:, None]
        return counter_uniform(view_keys.reshape(-1), _N_DRAWS).reshape(self.n_views, len(keys), _N_DRAWS)

    def boxes(self, keys: Tensor, height: int, width: int) -> Tensor:
        """(n_views, B, 4) crop boxes (x1, y1, x2, y2) in input pixels."""
        u = self.draws(keys)
        g = crop_boxes(u[:2].reshape(-1, _N_DRAWS), height, width, self.global_scale, self.ratio)
        parts = [g.reshape(2, len(keys), 4)]
        if self.n_local:
            loc = crop_boxes(u[2:].reshape(-1, _N_DRAWS), height, width, self.local_scale, self.ratio)
            parts.append(loc.reshape(self.n_local, len(keys), 4))
        return torch.cat(parts)

    def forward(self, frames: Tensor, keys: Tensor | None = None,
                generator: torch.Generator | None = None) -> list[Tensor]:
        x = frames if frames.ndim == 4 else frames[:, None]
        x = x.float() / 255.0 if frames.dtype == torch.uint8 else x.float()
        b, _, hh, ww = x.shape
        if keys is None:
            keys = torch.randint(0, 1 << 62, (b,), generator=generator).to(x.device)
        keys = keys.to(x.device)
        u = self.draws(keys)  # (V, B, D)
        boxes = self.boxes(keys, hh, ww).to(x.dtype)
        batch_idx = torch.arange(b, device=x.device, dtype=x.dtype)
        views: list[Tensor] = []
        for first, count, size in ((0, 2, self.global_size), (2, self.n_local, self.local_size)):
            if count == 0:
                continue
            rois = torch.cat([batch_idx.repeat(count)[:, None], boxes[first:first + count].reshape(-1, 4)], dim=1)
            out = roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
            uv = u[first:first + count].reshape(-1, _N_DRAWS)
            blur_p = [self.blur[0], self.blur[1]] if first == 0 else [self.blur[2]] * count
            solar_p = [0.0, self.solarize] if first == 0 else [0.0] * count
            out = self._photometric(out, uv, blur_p, solar_p)
            views.extend(out.split(b))
        return views

    def _photometric(self, x: Tensor, u: Tensor, blur_probs: list[float], solar_probs: list[float]) -> Tensor:
        """Flip, jitter, blur, solarise; `u` is (views * B, D), the probabilities are per view."""
        n_per_view = len(x) // len(blur_probs)
        blur_p = torch.tensor(blur_probs, device=x.device).repeat_interleave(n_per_view)
        solar_p = torch.tensor(solar_probs, device=x.device).repeat_interleave(n_per_view)
        flip = u[:, _D_FLIP] < self.hflip
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        jit = u[:, _D_JIT] < self.jitter
        bf = torch.where(jit, 1 + self.brightness * (2 * u[:, _D_BRIGHT] - 1), torch.ones_like(u[:, 0]))[:, None, None, None]
        cf = torch.where(jit, 1 + self.contrast * (2 * u[:, _D_CONTR] - 1), torch.ones_like(u[:, 0]))[:, None, None, None]

        def bright(y: Tensor) -> Tensor:
            return (y * bf).clamp(0, 1)

        def contr(y: Tensor) -> Tensor:
            return (cf * y + (1 - cf) * y.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)

        order = (u[:, _D_ORDER] < 0.5)[:, None, None, None]  # torchvision applies the jitters in random order
        x = torch.where(order, contr(bright(x)), bright(contr(x)))
        sigma = self.sigma[0] + u[:, _D_SIGMA] * (self.sigma[1] - self.sigma[0])
        sigma = torch.where(u[:, _D_BLUR] < blur_p, sigma, torch.zeros_like(sigma))
        if max(blur_probs) > 0:
            x = gaussian_blur(x, sigma, int(math.ceil(3 * self.sigma[1])))
        if max(solar_probs) == 0:
            return x
        sol = (u[:, _D_SOLAR] < solar_p)[:, None, None, None]
        return torch.where(sol & (x >= 0.5), 1 - x, x)
