"""Backbones by name (timm ViTs, as in DINO and the ALAN paper) and the locked `Backbone`.

A `Backbone` takes grayscale frames (uint8 or float in [0, 1], any size), resizes them to its
image size, replicates them to 3 channels, standardises them with its own mean/std and returns
the CLS token (after the final norm) and the patch tokens of the last layer.

Architectures: the "backbone" entries of `alan.models.registry` (`list_archs("backbone")`,
`alan backbone archs`), timm ViTs shaped as in the ALAN paper (*Unlocking the Heart Using
Adaptive Locked Agnostic Networks*, section 3): ViT-S/8 at 224 px (the official DINO
ImageNet weights), ViT-S/4 at 112 px (the paper's echo backbone) and smaller CPU-sized members.

A backbone artifact (`save_backbone` / `load_backbone`) is the ViT's state dict in the official
DINO / timm key layout (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.*``,
``norm.*``) as safetensors, plus the `BackboneConfig` as JSON; its content hash is `Backbone.hash`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from alan.artifacts import bundled_artifact, load_artifact, save_artifact
from alan.errors import AlanError, ArtifactError
from alan.models.registry import IMAGENET_MEAN, IMAGENET_STD, ViTConfig, get_arch, list_archs, token_grid
from alan.transforms.intensity import GRAY_METHODS, REFERENCE_POINTS, match_gray


#: name -> `ViTConfig` of every registered backbone architecture.
ARCHS: dict[str, ViTConfig] = {name: get_arch(name).config for name in list_archs("backbone")}  # type: ignore[misc]


@dataclass
class BackboneConfig:
    """The JSON side of a backbone artifact.

    `mean`/`std` are the per-channel standardisation the ViT was trained with (ImageNet for
    ImageNet weights, the training frames' statistics for `alan dino train`); `source` says where
    the weights came from, `data_fingerprint` identifies the training data, `command` is the
    command line that made the artifact and `meta` holds everything else (options, data summary).
    """

    arch: str
    img_size: int
    patch_size: int
    embed_dim: int
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    drop_path_rate: float = 0.0
    source: str = "random"
    meta: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    command: str = ""
    gray_reference: list[float] = field(default_factory=list)
    gray_method: str = "histogram"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["gray_reference"]:  # absent rather than empty: artifacts without one keep their hash
            del d["gray_reference"]
        if d["gray_method"] == "histogram":  # likewise the matched copies made before there was a choice
            del d["gray_method"]
        return {"kind": "backbone", **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})


def arch_spec(arch: str) -> ViTConfig:
    """The registered `ViTConfig` of a backbone architecture (one-line error for an unknown name)."""
    return get_arch(arch, "backbone").config  # type: ignore[return-value]


def create_vit(arch: str, drop_path_rate: float = 0.0, dynamic_img_size: bool = False) -> nn.Module:
    """The bare timm ViT for `arch` (no classifier head, random init, nothing downloaded).

    ``dynamic_img_size=True`` accepts any input size that is a multiple of the patch size and
    resamples the position embeddings on the fly (DINO's student sees global and local crops);
    the state dict is the same either way.
    """
    spec = arch_spec(arch)
    return timm.create_model(spec.timm_name, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate,
                             dynamic_img_size=dynamic_img_size, **spec.timm_kwargs())


class Backbone(nn.Module):
    """A ViT plus the input convention it was trained with (size, channels, gray reference, mean/std)."""

    def __init__(self, config: BackboneConfig, vit: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.vit = vit if vit is not None else create_vit(config.arch, config.drop_path_rate, dynamic_img_size=True)
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("gray_reference", torch.tensor(config.gray_reference, dtype=torch.float32), persistent=False)
        self.hash: str | None = None

    @property
    def grid(self) -> int:
        return self.config.img_size // self.config.patch_size

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def grid_at(self, size: int | None = None) -> int:
        """The token grid of input frames `size` px square (default: the training size)."""
        return token_grid(self.config.img_size if size is None else size, self.config.patch_size)

    def prepare(self, frames: torch.Tensor | np.ndarray, size: int | None = None) -> torch.Tensor:
        """(N, H, W) or (N, C, H, W), uint8 or float in [0, 1] -> standardised (N, 3, S, S) float.

        S is `size` (a multiple of the patch size; the position embeddings are resampled to its
        grid) or, by default, the size the ViT was trained at. With a gray reference, each resized
        gray frame is matched to it first (`match_gray` with the config's `gray_method`)."""
        x = torch.as_tensor(frames)
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = x.float().to(self.mean.device)
        if x.ndim == 3:
            x = x[:, None]
        if len(self.gray_reference) and x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        s = self.grid_at(size) * self.config.patch_size
        if x.shape[-2:] != (s, s):  # gray frames are resized as one channel, then replicated
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        if len(self.gray_reference):
            x = match_gray(x, self.gray_reference, self.config.gray_method)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepared input -> (CLS (N, D) after the final norm, patch tokens (N, grid*grid, D))."""
        tokens = self.vit.forward_features(x)
        n_prefix = getattr(self.vit, "num_prefix_tokens", 1)
        return tokens[:, 0], tokens[:, n_prefix:]

    def forward(self, frames: torch.Tensor | np.ndarray, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_tokens(self.prepare(frames, size))


def create_backbone(arch: str, **config: Any) -> Backbone:
    """A randomly initialised `Backbone` of a registered architecture (`list_archs("backbone")`)."""
    spec = arch_spec(arch)
    cfg = BackboneConfig(arch=arch, img_size=spec.img_size, patch_size=spec.patch_size, embed_dim=spec.embed_dim, **config)
    return Backbone(cfg)


def gray_stats(mean: float | Sequence[float], std: float | Sequence[float]) -> tuple[list[float], list[float]]:
    """Mean/std as the 3-channel lists a `BackboneConfig` stores (a gray value is replicated)."""
    m = [float(mean)] * 3 if np.isscalar(mean) else [float(v) for v in mean]  # type: ignore[arg-type]
    s = [float(std)] * 3 if np.isscalar(std) else [float(v) for v in std]  # type: ignore[arg-type]
    if len(m) == 1:
        m, s = m * 3, s * 3
    if len(m) != 3 or len(s) != 3 or min(s) <= 0:
        raise AlanError(f"mean/std must be one or three values with std > 0, got {m} / {s}")
    return m, s


def with_gray_reference(backbone: Backbone, reference: Sequence[float], method: str = "histogram",
                        **meta: Any) -> Backbone:
    """A copy of `backbone` (same weights) that matches every frame to `reference`
    (`alan.transforms.intensity.gray_reference`) by `method` (`GRAY_METHODS`); ``meta.gray_match``
    records the source backbone's hash (``from``) and `meta` (e.g. the data the reference was taken from)."""
    ref = [float(v) for v in reference]
    if len(ref) != REFERENCE_POINTS or any(b < a for a, b in zip(ref, ref[1:])) or ref[0] < 0 or ref[-1] > 1:
        raise AlanError(f"a gray reference is {REFERENCE_POINTS} non-decreasing values in [0, 1], got {len(ref)} values")
    if method not in GRAY_METHODS:
        raise AlanError(f"unknown gray-matching method {method!r}; expected one of {', '.join(GRAY_METHODS)}")
    config = replace(backbone.config, gray_reference=ref, gray_method=method,
                     meta={**backbone.config.meta, "gray_match": {"from": backbone.hash, **meta}})
    copy = Backbone(config)
    copy.vit.load_state_dict(backbone.vit.state_dict(), strict=True)
    return copy.eval().requires_grad_(False)


def save_backbone(backbone: Backbone, out_dir: str | Path, meta: dict[str, Any] | None = None) -> str:
    """Lock `backbone` as an artifact in `out_dir` and return its content hash (also set on `backbone.hash`).

    `meta` is merged into ``config.meta`` (e.g. training options, data summary).
    """
    config = backbone.config
    if meta:
        config = replace(config, meta={**config.meta, **meta})
        backbone.config = config
    tensors = {k: v for k, v in backbone.vit.state_dict().items()}
    backbone.hash = save_artifact(out_dir, tensors, config.to_dict())
    return backbone.hash


def load_backbone(path: str | Path, device: str | torch.device = "cpu") -> Backbone:
    """Load a locked backbone artifact (eval mode, no gradients) with its content hash in `.hash`.

    `path` is the artifact folder or a run folder holding it in ``backbone/`` (`alan dino train`).
    """
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "backbone" / "config.json").is_file():
        path = path / "backbone"
    tensors, cfg = load_artifact(path, kind="backbone")
    config = BackboneConfig.from_dict(cfg)
    spec = arch_spec(config.arch)
    if (config.img_size, config.patch_size, config.embed_dim) != (spec.img_size, spec.patch_size, spec.embed_dim):
        raise ArtifactError(f"{path}: config says {config.img_size}px/patch {config.patch_size}/dim {config.embed_dim}, "
                            f"but {config.arch} is {spec.img_size}px/patch {spec.patch_size}/dim {spec.embed_dim}")
    backbone = Backbone(config)
    problem = state_dict_mismatch(backbone.vit, tensors)
    if problem:
        raise ArtifactError(f"{path}: weights do not fit {config.arch}: {problem}")
    backbone.vit.load_state_dict(tensors, strict=True)
    backbone.hash = cfg["hash"]
    return backbone.to(device).eval().requires_grad_(False)


def bundled_backbone(name: str = "phantom_vit_tiny") -> Path:
    """Folder of a backbone artifact shipped with alan (e.g. the demo's locked phantom backbone)."""
    return bundled_artifact("backbones", name, "backbone", "scripts/train_demo_backbone.sh")


def _short(names: Sequence[str], limit: int = 6) -> str:
    names = list(names)
    head = ", ".join(names[:limit])
    return head + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def state_dict_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """'' if `state` loads strictly into `model`, else one line naming missing/unexpected/mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
    if shapes:
        parts.append(f"shape mismatch ({len(shapes)}): {_short(shapes, 3)}")
    return "; ".join(parts)


#: View features: the CLS token (the paper's) or the patch tokens averaged on a 7 x 7 grid.
FEATURES = ("cls", "grid")
GRID = 7


def view_features(cls: torch.Tensor, tokens: torch.Tensor, features: str = "cls") -> torch.Tensor:
    """View features of a backbone pass: (N, D) CLS tokens (`"cls"`, the ALAN paper's kNN) or (`"grid"`,
    beyond the paper) the patch tokens averaged on a 7 x 7 grid of the frame, concatenated (N, 49 D)."""
    if features == "cls":
        return cls
    n, t, d = tokens.shape
    g = int(round(t ** 0.5))
    grid = tokens.transpose(1, 2).reshape(n, d, g, g)
    return torch.nn.functional.adaptive_avg_pool2d(grid, GRID).flatten(1)
