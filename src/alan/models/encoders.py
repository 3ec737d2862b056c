"""CNN encoders by name for SSCL (SSCL paper: VGG16 and DenseNet121, 2-D, one per frame).

An `Encoder` maps grayscale images (N, 1, H, W) in [0, 1] to a feature vector (N, D): the
convolutional trunk of a timm model followed by global average pooling. That is the output
Keras gives with ``include_top=False, pooling="avg"`` (the paper's setting reads like Keras:
"sparse categorical cross-entropy") and SimCLR's h: D = 512 for VGG16, 1024 for DenseNet121.
VGG's 4096-wide fc6/fc7 are not part of the encoder.

Grayscale is handled explicitly, and the choice is stored with the encoder:
    "single"     in_chans=1; the first conv sees the one channel (random init, SSCL from scratch).
    "replicate"  in_chans=3; the gray channel is copied to R, G and B and standardised with the
                 ImageNet mean/std, so ImageNet filters see the statistics they were trained on.
`create_encoder(..., imagenet_weights=FILE)` uses "replicate" unless told otherwise; with
grayscale="single" and ImageNet weights the first conv's RGB kernels are summed (timm
`adapt_input_conv`), which gives the same response to a gray image up to the per-channel std.

Architectures: the "encoder" entries of `alan.models.registry` ("vgg16", "densenet121", the
paper's; "vgg_tiny", "densenet_tiny", the same families shrunk for CPU demos and tests), and any
other timm model name. Weights files are read by `alan.models.weights.read_checkpoint` (the one
checkpoint reader: ``torch.load(weights_only=True)`` or safetensors).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from alan.artifacts import file_sha256
from alan.errors import AlanError, ArtifactError, DataError
from alan.models.registry import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, CNNConfig, get_arch, list_archs
from alan.models.weights import read_checkpoint

#: The paper's two encoders and their small CPU-sized relatives (registry tags "paper" / "tiny").
PAPER_ARCHS: tuple[str, ...] = tuple(list_archs("encoder", tag="paper"))
TINY: tuple[str, ...] = tuple(list_archs("encoder", tag="tiny"))


@dataclass
class EncoderConfig:
    """The JSON side of an encoder: enough to rebuild it and to feed it correctly."""

    arch: str
    in_chans: int = 1
    grayscale: str = "single"
    img_size: int = 224
    num_features: int = 0
    mean: list[float] = field(default_factory=lambda: list(GRAY_MEAN))
    std: list[float] = field(default_factory=lambda: list(GRAY_STD))
    init: str = "random"  # "random", "imagenet:<file sha256[:16]>", "sscl"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _build_trunk(arch: str, in_chans: int) -> nn.Module:
    """A timm model without classifier (and, for VGG, without the fc6/fc7 ConvMlp)."""
    try:
        cfg: CNNConfig = get_arch(arch, "encoder").config  # type: ignore[assignment]
    except AlanError:
        cfg = CNNConfig("timm", arch)  # any other timm model name
    if cfg.family == "vgg":
        from timm.models.vgg import VGG

        model = VGG(num_classes=0, in_chans=in_chans, **cfg.kwargs)
    elif cfg.family == "densenet":
        from timm.models.densenet import DenseNet

        model = DenseNet(num_classes=0, in_chans=in_chans, **cfg.kwargs)
    else:
        try:
            model = timm.create_model(cfg.timm_name, pretrained=False, num_classes=0, in_chans=in_chans)
        except RuntimeError as e:  # timm: "Unknown model (...)"
            raise AlanError(f"unknown encoder architecture {arch!r} ({e}); use "
                            f"{', '.join(list_archs('encoder'))} or a timm model name") from None
    if _is_vgg(model):
        model.pre_logits = nn.Identity()
        model.head = nn.Identity()
    return model


def _is_vgg(model: nn.Module) -> bool:
    return type(model).__name__ == "VGG"


class Encoder(nn.Module):
    """Trunk + global average pooling, with its input convention (channels, size, mean/std)."""

    def __init__(self, config: EncoderConfig, model: nn.Module | None = None):
        super().__init__()
        self.model = model if model is not None else _build_trunk(config.arch, config.in_chans)
        self.config = config
        self.register_buffer("mean", torch.tensor(config.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, -1, 1, 1), persistent=False)
        if not config.num_features:
            config.num_features = self._probe_dim()
        self.hash: str | None = None

    @property
    def num_features(self) -> int:
        return self.config.num_features

    def _probe_dim(self) -> int:
        was = self.training
        self.eval()
        with torch.no_grad():
            d = self(torch.zeros(1, 1, self.config.img_size, self.config.img_size)).shape[1]
        self.train(was)
        return int(d)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) uint8 or float in [0, 1] -> standardised (N, in_chans, S, S) float."""
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        if x.ndim == 3:
            x = x[:, None]
        if x.shape[1] != 1:
            raise ValueError(f"encoder expects grayscale (N, 1, H, W), got {tuple(x.shape)}")
        s = self.config.img_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        if self.config.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def forward_prepared(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_features(x)
        if feats.ndim == 4:
            return feats.mean(dim=(2, 3))
        return self.model.forward_head(feats, pre_logits=True)  # token models (ViT, ...)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_prepared(self.prepare(x))

    def state(self) -> dict[str, torch.Tensor]:
        """The weights as a flat dict for `save_artifact` (0-d buffers such as BatchNorm's
        ``num_batches_tracked`` stored with shape (1,); `encoder_from_artifact` restores them)."""
        return {k: v.detach().cpu().clone().reshape(v.shape or (1,)) for k, v in self.model.state_dict().items()}


def create_encoder(arch: str, *, img_size: int = 224, imagenet_weights: str | Path | None = None,
                   grayscale: str = "auto", seed: int | None = None) -> Encoder:
    """An encoder by name, randomly initialised (with `seed` if given) or from an ImageNet file.

    `grayscale`: "auto" (replicate with ImageNet weights, single otherwise), "single", "replicate".
    """
    if grayscale == "auto":
        grayscale = "replicate" if imagenet_weights is not None else "single"
    if grayscale not in ("single", "replicate"):
        raise AlanError(f"grayscale must be auto, single or replicate, got {grayscale!r}")
    in_chans = 3 if grayscale == "replicate" else 1
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = _build_trunk(arch, in_chans)
    else:
        model = _build_trunk(arch, in_chans)
    init = "random"
    if imagenet_weights is not None:
        init = "imagenet:" + load_imagenet_weights(model, imagenet_weights)
    use_imagenet_stats = imagenet_weights is not None or grayscale == "replicate"
    if use_imagenet_stats and in_chans == 3:
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    elif imagenet_weights is not None:
        # summed RGB kernels: use the channel-average ImageNet statistics
        mean, std = [sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3]
    else:
        mean, std = list(GRAY_MEAN), list(GRAY_STD)
    cfg = EncoderConfig(arch=arch, in_chans=in_chans, grayscale=grayscale, img_size=img_size, mean=mean, std=std,
                        init=init)
    return Encoder(cfg, model)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or torch file (`read_checkpoint`: ``weights_only=True``),
    unwrapped from a ``state_dict`` / ``model`` / ``module`` entry if it has one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such weights file")
    sd = read_checkpoint(path)
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DataError(path, "not a state dict of tensors")
    return dict(sd)


_HEAD = re.compile(r"^(classifier|fc|head|pre_logits)\.")


def _normalise_keys(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept torchvision or timm key names; drop classifier weights."""
    sd = {re.sub(r"^(module\.|model\.)", "", k): v for k, v in sd.items()}
    name = type(model).__name__
    if name == "DenseNet":
        from timm.models.densenet import _filter_torchvision_pretrained

        sd = _filter_torchvision_pretrained(sd)
    return {k: v for k, v in sd.items() if not _HEAD.match(k)}


def load_imagenet_weights(model: nn.Module, path: str | Path, state: dict[str, torch.Tensor] | None = None) -> str:
    """Load a user-supplied ImageNet checkpoint into a trunk; returns the file's sha256[:16].

    The trunk's every tensor must be in the file (head/classifier keys are ignored). A 3-channel
    first conv is summed to one channel when the trunk takes one channel. `state`: the file's
    already-read state dict (`read_state_dict`), to read a large file once.
    """
    path = Path(path)
    sd = _normalise_keys(model, dict(state) if state is not None else read_state_dict(path))
    own = model.state_dict()
    first = next(k for k, v in own.items() if v.ndim == 4)
    if first in sd and sd[first].shape[1] != own[first].shape[1]:
        from timm.models import adapt_input_conv

        sd[first] = adapt_input_conv(own[first].shape[1], sd[first])
    missing = [k for k in own if k not in sd]
    if missing:
        raise DataError(path, f"does not fit {type(model).__name__}: {len(missing)} of {len(own)} tensors missing "
                              f"(e.g. {missing[0]})")
    bad = [k for k in own if sd[k].shape != own[k].shape]
    if bad:
        raise DataError(path, f"shape mismatch for {bad[0]}: file {tuple(sd[bad[0]].shape)}, "
                              f"model {tuple(own[bad[0]].shape)}")
    model.load_state_dict({k: sd[k] for k in own})
    return file_sha256(path)[:16]


def fits(arch: str, path: str | Path, state: dict[str, torch.Tensor] | None = None) -> bool:
    """Whether the weights file at `path` fits the trunk of `arch` (to match files to archs)."""
    model = _build_trunk(arch, 3)
    sd = _normalise_keys(model, dict(state) if state is not None else read_state_dict(path))
    own = model.state_dict()
    return all(k in sd and sd[k].shape == v.shape for k, v in own.items())


def encoder_from_artifact(tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Encoder:
    """Rebuild an `Encoder` from `load_artifact` output (config holds an "encoder" section)."""
    ecfg = EncoderConfig.from_dict(config["encoder"])
    enc = Encoder(ecfg, _build_trunk(ecfg.arch, ecfg.in_chans))
    own = enc.model.state_dict()
    tensors = {k: v.reshape(own[k].shape) if k in own and own[k].ndim == 0 and v.numel() == 1 else v
               for k, v in tensors.items()}
    try:
        enc.model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ArtifactError(f"encoder weights do not fit {ecfg.arch}: {str(e).splitlines()[0]}") from None
    enc.hash = config.get("hash")
    return enc


def load_encoder(path: str | Path) -> Encoder:
    """Load a locked encoder artifact written by `alan sscl pretrain`."""
    from alan.artifacts import load_artifact

    tensors, config = load_artifact(path, kind="sscl_encoder")
    return encoder_from_artifact(tensors, config)


__all__ = ["Encoder", "EncoderConfig", "PAPER_ARCHS", "TINY", "create_encoder", "encoder_from_artifact", "fits",
           "load_encoder", "load_imagenet_weights", "read_state_dict"]
