"""One registry of architectures by name, in the manner of timm's model registry.

Every name maps to an `ArchEntry`: its typed config (`ViTConfig` for the locked DINO backbones
of the ALAN paper, *Unlocking the Heart Using Adaptive Locked Agnostic Networks*, section 3;
`CNNConfig` for the SSCL encoders of Nakashima et al., *Interaction of a priori anatomic knowledge
with self-supervised contrastive learning in cardiac MRI*, section 5.1) and a `PretrainedCfg`
record of the input its weights expect (channels and size, mean and std), as timm's
``pretrained_cfg``. `list_archs` lists the names (optionally by kind, tag or pattern);
`get_arch` looks one up with a one-line error for an unknown name.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from alan.errors import AlanError

#: ImageNet channel statistics (torchvision / timm), for weights trained on ImageNet.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Standardisation for single-channel inputs in [0, 1] that no ImageNet statistics apply to.
GRAY_MEAN: tuple[float] = (0.5,)
GRAY_STD: tuple[float] = (0.25,)


@dataclass(frozen=True)
class PretrainedCfg:
    """The input an architecture's weights expect: (channels, height, width) and per-channel mean/std."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


def token_grid(size: int, patch_size: int) -> int:
    """The token grid (side) of frames `size` px square cut into `patch_size` patches; a size that is
    not a positive multiple of the patch size is a one-line `AlanError`."""
    size = int(size)
    if size <= 0 or size % patch_size:
        raise AlanError(f"input size {size} is not a positive multiple of the patch size {patch_size}")
    return size // patch_size


@dataclass(frozen=True)
class ViTConfig:
    """A timm ViT by name plus the overrides that shape it (image size, patch size, width, depth)."""

    timm_name: str
    img_size: int
    patch_size: int
    embed_dim: int
    depth: int | None = None
    num_heads: int | None = None

    def timm_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"img_size": self.img_size, "patch_size": self.patch_size}
        if self.depth is not None:
            kw.update(depth=self.depth, embed_dim=self.embed_dim, num_heads=self.num_heads)
        return kw


@dataclass(frozen=True)
class CNNConfig:
    """A convolutional trunk: a timm model name (`family` "timm") or a timm VGG / DenseNet class
    built with smaller layer lists (`family` "vgg" / "densenet", `kwargs` passed to the class)."""

    family: str
    timm_name: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArchEntry:
    """A registered architecture: its name, kind ("backbone" or "encoder"), config and input record."""

    name: str
    kind: str
    config: ViTConfig | CNNConfig
    pretrained_cfg: PretrainedCfg
    tags: tuple[str, ...] = ()
    description: str = ""


_REGISTRY: dict[str, ArchEntry] = {}


def register_arch(entry: ArchEntry) -> ArchEntry:
    """Add `entry` to the registry (a name is registered once)."""
    if entry.name in _REGISTRY:
        raise AlanError(f"architecture {entry.name!r} is already registered")
    if entry.kind not in ("backbone", "encoder"):
        raise AlanError(f"architecture kind must be backbone or encoder, got {entry.kind!r}")
    _REGISTRY[entry.name] = entry
    return entry


def list_archs(kind: str | None = None, tag: str | None = None, pattern: str = "*") -> list[str]:
    """Registered names in registration order, filtered by kind, tag and a glob `pattern` (as timm's)."""
    return [n for n, e in _REGISTRY.items()
            if (kind is None or e.kind == kind) and (tag is None or tag in e.tags) and fnmatch.fnmatch(n, pattern)]


def get_arch(name: str, kind: str | None = None) -> ArchEntry:
    """The entry for `name`; an unknown name (of that kind) is a one-line `AlanError` listing the known ones."""
    entry = _REGISTRY.get(name)
    if entry is None or (kind is not None and entry.kind != kind):
        what = f"{kind} architecture" if kind else "architecture"
        raise AlanError(f"unknown {what} {name!r}; known: {', '.join(list_archs(kind))}")
    return entry


def is_registered(name: str, kind: str | None = None) -> bool:
    return name in _REGISTRY and (kind is None or _REGISTRY[name].kind == kind)


def _vit(name: str, timm_name: str, img_size: int, patch: int, dim: int, depth: int | None = None,
         heads: int | None = None, tags: tuple[str, ...] = (), description: str = "") -> None:
    register_arch(ArchEntry(name, "backbone", ViTConfig(timm_name, img_size, patch, dim, depth, heads),
                            PretrainedCfg((3, img_size, img_size)), tags, description))


def _cnn(name: str, family: str, timm_name: str | None = None, tags: tuple[str, ...] = (), description: str = "",
         **kwargs: Any) -> None:
    register_arch(ArchEntry(name, "encoder", CNNConfig(family, timm_name, kwargs), PretrainedCfg((3, 224, 224)),
                            tags, description))


# Backbones (ALAN): timm ViTs, 3-channel input, ImageNet statistics unless a training run stores its own.
_vit("vit_small_p8_224", "vit_small_patch8_224", 224, 8, 384,
     description="ViT-S/8 at 224 px (the official DINO ImageNet weights' shape), 28x28 tokens")
_vit("vit_small_p4_112", "vit_small_patch16_224", 112, 4, 384,
     description="ViT-S/4 at 112 px (the ALAN paper's echo backbone), 28x28 tokens")
_vit("vit_small_p8_112", "vit_small_patch16_224", 112, 8, 384, description="ViT-S/8 at 112 px, 14x14 tokens")
_vit("vit_tiny_p8_112", "vit_tiny_patch16_224", 112, 8, 192, tags=("cpu",),
     description="ViT-Ti/8 at 112 px, 14x14 tokens (CPU-friendly)")
_vit("vit_tiny_p4_112", "vit_tiny_patch16_224", 112, 4, 192, description="ViT-Ti/4 at 112 px, 28x28 tokens")
_vit("vit_tiny_d6_p8_112", "vit_tiny_patch16_224", 112, 8, 192, depth=6, heads=3, tags=("cpu",),
     description="ViT-Ti/8 with 6 of its 12 blocks at 112 px, 14x14 tokens (CPU DINO runs; the demo's)")
_vit("vit_micro_p8_112", "vit_tiny_patch16_224", 112, 8, 64, depth=2, heads=2, tags=("cpu",),
     description="2-block ViT (64 dim) at 112 px, 14x14 tokens (long CPU DINO runs)")
_vit("vit_small_p16_dinov3_224", "vit_small_patch16_dinov3", 224, 16, 384,
     description="DINOv3 ViT-S/16 at 224 px (rotary position embeddings, 4 storage tokens), 14x14 tokens: "
                 "the official DINOv3 weights' shape")
_vit("vit_micro_p8_64", "vit_tiny_patch16_224", 64, 8, 64, depth=2, heads=2, tags=("cpu",),
     description="2-block ViT (64 dim) at 64 px, 8x8 tokens (tests and smoke runs only)")

# Encoders (SSCL): the paper's two, and the same families shrunk for CPU demos and tests.
_cnn("vgg16", "timm", "vgg16", tags=("paper",), description="VGG16 trunk (the SSCL paper's), 512 features")
_cnn("densenet121", "timm", "densenet121", tags=("paper",),
     description="DenseNet121 trunk (the SSCL paper's), 1024 features")
_cnn("vgg_tiny", "vgg", tags=("tiny",), description="VGG family, 5 stages of 16-128 channels",
     cfg=[16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, "M"])
_cnn("densenet_tiny", "densenet", tags=("tiny",), description="DenseNet family, growth 12, blocks (2, 4, 4)",
     growth_rate=12, block_config=(2, 4, 4))


__all__ = ["ArchEntry", "CNNConfig", "GRAY_MEAN", "GRAY_STD", "IMAGENET_MEAN", "IMAGENET_STD", "PretrainedCfg",
           "ViTConfig", "get_arch", "is_registered", "list_archs", "register_arch"]
