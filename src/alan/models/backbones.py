"""Backbones by name (timm ViTs, as in DINO and the ALAN paper) and the locked `Backbone`.

A `Backbone` takes grayscale frames (uint8 or float in [0, 1], any size), resizes them to its
image size, replicates them to 3 channels, standardises them with its own mean/std and returns
the CLS token (after the final norm) and the patch tokens of the last layer.

Architectures (ALAN paper, METHODS A1):
    vit_small_p8_224  ViT-S/8 at 224 px (the official DINO ImageNet weights' shape), 28x28 tokens
    vit_small_p4_112  ViT-S/4 at 112 px (the paper's echo backbone), 28x28 tokens
    vit_tiny_p8_112   ViT-Ti/8 at 112 px, 14x14 tokens (CPU-friendly)
    vit_tiny_p4_112   ViT-Ti/4 at 112 px, 28x28 tokens
    vit_small_p8_112  ViT-S/8 at 112 px, 14x14 tokens
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from alan.errors import AlanError


@dataclass(frozen=True)
class BackboneSpec:
    """What `create_backbone` builds: a timm model name plus the overrides that shape it."""

    timm_name: str
    img_size: int
    patch_size: int
    embed_dim: int


ARCHS: dict[str, BackboneSpec] = {
    "vit_small_p8_224": BackboneSpec("vit_small_patch8_224", 224, 8, 384),
    "vit_small_p4_112": BackboneSpec("vit_small_patch16_224", 112, 4, 384),
    "vit_small_p8_112": BackboneSpec("vit_small_patch16_224", 112, 8, 384),
    "vit_tiny_p8_112": BackboneSpec("vit_tiny_patch16_224", 112, 8, 192),
    "vit_tiny_p4_112": BackboneSpec("vit_tiny_patch16_224", 112, 4, 192),
}


@dataclass
class BackboneConfig:
    """The JSON side of a backbone artifact."""

    arch: str
    img_size: int
    patch_size: int
    embed_dim: int
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    drop_path_rate: float = 0.0
    source: str = "random"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "backbone", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})


def create_vit(arch: str, drop_path_rate: float = 0.0) -> nn.Module:
    """The bare timm ViT for `arch` (no classifier head, random init, nothing downloaded)."""
    if arch not in ARCHS:
        raise AlanError(f"unknown backbone architecture {arch!r}; known: {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    return timm.create_model(spec.timm_name, pretrained=False, num_classes=0, img_size=spec.img_size,
                             patch_size=spec.patch_size, drop_path_rate=drop_path_rate, dynamic_img_size=False)


class Backbone(nn.Module):
    """A ViT plus the input convention it was trained with (size, channels, mean/std)."""

    def __init__(self, config: BackboneConfig, vit: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.vit = vit if vit is not None else create_vit(config.arch, config.drop_path_rate)
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.hash: str | None = None

    @property
    def grid(self) -> int:
        return self.config.img_size // self.config.patch_size

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def prepare(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(N, H, W) or (N, C, H, W), uint8 or float in [0, 1] -> standardised (N, 3, S, S) float."""
        x = torch.as_tensor(frames)
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = x.float().to(self.mean.device)
        if x.ndim == 3:
            x = x[:, None]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        s = self.config.img_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepared input -> (CLS (N, D) after the final norm, patch tokens (N, grid*grid, D))."""
        tokens = self.vit.forward_features(x)
        n_prefix = getattr(self.vit, "num_prefix_tokens", 1)
        return tokens[:, 0], tokens[:, n_prefix:]

    def forward(self, frames: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_tokens(self.prepare(frames))


def create_backbone(arch: str, **config: Any) -> Backbone:
    """A randomly initialised `Backbone` of a named architecture (see `ARCHS`)."""
    if arch not in ARCHS:
        raise AlanError(f"unknown backbone architecture {arch!r}; known: {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    cfg = BackboneConfig(arch=arch, img_size=spec.img_size, patch_size=spec.patch_size, embed_dim=spec.embed_dim, **config)
    return Backbone(cfg)
