"""RAPTOR: the token-wise parcellation head on a locked DINO backbone (ALAN paper, section 3).

A three-layer perceptron applied to every last-layer patch token independently:

    (1) LayerNorm, Linear D->D, dropout, GELU, skip connection
    (2) LayerNorm, Linear D->D, dropout, ReLU, skip connection
    (3) LayerNorm, Linear D->K, dropout            -> K logits (softmax = parcel probabilities)

LayerNorm before each Linear, dropout 0.2 and the initialisation (Xavier, Kaiming, Xavier; zero
biases) follow the reference code (github.com/AstraZeneca/UnlockingHeart, ``MarginalBlock``).
For image-resolution output the K logits are bilinearly upsampled to the image size *before*
softmax / argmax, as the paper states. Parcels are the argmax over K.

The head optionally standardises its input tokens per channel (``token_mean`` / ``token_std``
buffers, identity by default): the reference's ``standardize_dino_output`` option.

Position (an option beyond the paper, off by default): with ``position > 0`` every token is
extended by fixed Fourier features of its place on the token grid (`position_features`, unit
norm) times ``position``, so the head can tell apart two tissues that look alike but sit in
different places (the LV and LA blood pools of a standard view), and the STRAPTOR target sees
the same features (see `RaptorHead.loss_features`). The hidden width grows by the 8 position
channels; the weight is stored with the artifact. Position is relative ([0, 1] across the
sector), so a head applies to any token grid.

Input size (beyond the paper): ``input_size`` is the size the frames go to the backbone at, for
training and inference alike (None: the size the backbone was trained at). A larger input than
the backbone's own, with its position embeddings resampled (timm's ``dynamic_img_size``), gives
a finer token grid: a patch-8 backbone trained at 112 px and fed 224 px frames gives a 28 x 28
grid, a token per 4 px of a 112 px frame instead of 8 (docs/raptor.md, "Input size").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alan.artifacts import bundled_artifact, load_artifact, save_artifact
from alan.errors import ArtifactError

KIND = "raptor_head"
POSITION_DIM = 8


def position_features(grid: int) -> torch.Tensor:
    """Unit-norm Fourier features of each token's place on a grid x grid token grid, (grid^2, 8):
    cos / sin of pi f x and pi f y for f = 1/2, 1 with x, y in [0, 1] (row-major tokens). The dot
    product of two tokens' features falls monotonically with their distance along each axis."""
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    y, x = torch.meshgrid(c, c, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    feats = [fn(math.pi * f * v) for f in (0.5, 1.0) for v in (x, y) for fn in (torch.cos, torch.sin)]
    return torch.stack(feats, dim=-1) / 2.0  # each (cos, sin) pair has norm 1: 4 pairs -> norm 2


class _Block(nn.Module):
    """LayerNorm -> Linear -> dropout -> activation, with an optional skip connection."""

    def __init__(self, d_in: int, d_out: int, act: nn.Module | None, skip: bool, dropout: float, init: str):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.linear = nn.Linear(d_in, d_out)
        self.dropout = nn.Dropout(dropout)
        self.act = act if act is not None else nn.Identity()
        self.skip = skip and d_in == d_out
        getattr(nn.init, init)(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.dropout(self.linear(self.norm(x))))
        return x + y if self.skip else y


class RaptorHead(nn.Module):
    """Token-wise MLP: tokens (..., D) -> parcel logits (..., K).

    Args:
        embed_dim: D, the backbone's token width.
        n_parcels: K, the number of parcel classes.
        dropout: dropout after each Linear (reference: 0.2).
    """

    def __init__(self, embed_dim: int, n_parcels: int, dropout: float = 0.2, position: float = 0.0,
                 grid: int | None = None, input_size: int | None = None):
        super().__init__()
        if n_parcels < 2:
            raise ValueError(f"n_parcels must be >= 2, got {n_parcels}")
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        if position > 0 and not grid:
            raise ValueError("a head with position > 0 needs the token grid size")
        self.embed_dim = embed_dim
        self.n_parcels = n_parcels
        self.dropout = dropout
        self.position = float(position)
        self.grid = grid
        self.input_size = input_size  # frames go to the backbone at this size (None: the backbone's own)
        width = embed_dim + (POSITION_DIM if position > 0 else 0)
        self.block1 = _Block(width, width, nn.GELU(), True, dropout, "xavier_uniform_")
        self.block2 = _Block(width, width, nn.ReLU(), True, dropout, "kaiming_uniform_")
        self.block3 = _Block(width, n_parcels, None, False, dropout, "xavier_uniform_")
        self.register_buffer("token_mean", torch.zeros(embed_dim))
        self.register_buffer("token_std", torch.ones(embed_dim))
        if position > 0:
            self.register_buffer("pos", position_features(grid), persistent=False)
        self.hash: str | None = None
        self.config: dict[str, Any] = {}

    def standardise(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-channel token standardisation with the stored mean/std (identity unless set)."""
        return (tokens - self.token_mean) / self.token_std

    def _with_position(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """(..., N, D) -> (..., N, D + 8): the grid's position features times `scale` appended."""
        if self.position == 0:
            return x
        pos = self.pos if x.shape[-2] == self.pos.shape[0] else position_features(self.grid_of(x.shape[-2])).to(x.device)
        pos = (scale * pos).to(x.dtype).expand(*x.shape[:-1], POSITION_DIM)
        return torch.cat([x, pos], dim=-1)

    def loss_features(self, standardised: torch.Tensor) -> torch.Tensor:
        """The features whose correlation the STRAPTOR loss follows: the standardised tokens, or,
        with position, [f / |f|, position * p] so that cos = (cos_f + position^2 cos_p) / (1 + position^2)."""
        if self.position == 0:
            return standardised
        f = F.normalize(standardised, dim=-1, eps=1e-10)
        return self._with_position(f, self.position)

    def forward(self, tokens: torch.Tensor, standardised: bool = False) -> torch.Tensor:
        """Tokens (..., N, D) -> logits (..., N, K); set `standardised` if `tokens` already went through `standardise`."""
        x = tokens if standardised else self.standardise(tokens)
        x = self._with_position(x, self.position * math.sqrt(self.embed_dim))
        return self.block3(self.block2(self.block1(x)))

    @staticmethod
    def grid_of(n_tokens: int) -> int:
        g = math.isqrt(n_tokens)
        if g * g != n_tokens:
            raise ValueError(f"{n_tokens} tokens do not form a square grid")
        return g

    def _as_logits(self, x: torch.Tensor, is_logits: bool | None) -> torch.Tensor:
        if is_logits is None:
            if self.n_parcels == self.embed_dim:
                raise ValueError("K == D: say whether the input is logits or tokens (is_logits=...)")
            is_logits = x.shape[-1] == self.n_parcels
        return x if is_logits else self(x)

    @staticmethod
    def upsample(logits: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        """Grid logits (N, g*g, K) -> logits (N, K, H, W), bilinearly upsampled (before softmax / argmax)."""
        n, t, k = logits.shape
        g = RaptorHead.grid_of(t)
        grid = logits.transpose(1, 2).reshape(n, k, g, g)
        size = (size, size) if isinstance(size, int) else tuple(size)
        return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)

    @staticmethod
    def parcels_of_logits(logits: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        """Parcels of grid logits (N, g*g, K): argmax over K after upsampling, int64 (N, H, W)."""
        return RaptorHead.upsample(logits, size).argmax(dim=1)

    def upsampled_logits(self, x: torch.Tensor, size: int | tuple[int, int], is_logits: bool | None = None) -> torch.Tensor:
        """Tokens or logits (N, g*g, D|K) -> logits (N, K, H, W), bilinearly upsampled."""
        return self.upsample(self._as_logits(x, is_logits), size)

    def probabilities(self, x: torch.Tensor, size: int | tuple[int, int], is_logits: bool | None = None) -> torch.Tensor:
        """Softmax over K of the upsampled logits: (N, K, H, W)."""
        return self.upsampled_logits(x, size, is_logits).softmax(dim=1)

    def parcels(self, x: torch.Tensor, size: int | tuple[int, int], is_logits: bool | None = None) -> torch.Tensor:
        """Argmax over K of the upsampled logits: int64 (N, H, W)."""
        return self.parcels_of_logits(self._as_logits(x, is_logits), size)


def bundled_head(name: str = "phantom_default") -> Path:
    """Folder of a RAPTOR head shipped with alan (trained on the bundled backbone; see its README)."""
    return bundled_artifact("heads", name, "RAPTOR head", "scripts/train_bundled_head.sh")


def save_head(head: RaptorHead, out_dir: str | Path, *, backbone_hash: str | None, loss: dict[str, Any] | None = None,
              training: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
              run_info: dict[str, Any] | None = None) -> str:
    """Save `head` as a locked ``raptor_head`` artifact; returns (and sets) its content hash.

    `run_info` (e.g. wall-clock times) is stored but not hashed."""
    tensors = {k: v for k, v in head.state_dict().items()}
    config = {
        "kind": KIND,
        "embed_dim": head.embed_dim,
        "n_parcels": head.n_parcels,
        "dropout": head.dropout,
        "position": head.position,
        "grid": head.grid,
        "input_size": head.input_size,
        "backbone_hash": backbone_hash,
        "loss": loss or {},
        "training": training or {},
        "meta": meta or {},
        "run_info": run_info or {},
    }
    head.hash = save_artifact(out_dir, tensors, config)
    head.config = {**config, "hash": head.hash}
    return head.hash


def set_input_size(path: str | Path, input_size: int | None, out_dir: str | Path) -> RaptorHead:
    """Save a copy of the head at `path` to `out_dir` with the frames going to the backbone at
    `input_size` px (None: the backbone's own), the weights unchanged; returns the new head.

    The size must be a multiple of the backbone's patch size; the head's training size stays in
    its record (``training.input_size``) and the source head's hash in ``meta.input_size_from``."""
    from alan.models.registry import get_arch, token_grid

    head = load_head(path)
    config = head.config
    arch = config.get("meta", {}).get("backbone_arch")
    if arch is None:
        raise ArtifactError(f"{resolve_head_dir(path)}: the head does not record its backbone's architecture")
    if input_size is not None:
        token_grid(input_size, get_arch(arch).config.patch_size)
    trained_at = config.get("training", {}).get("input_size", config.get("input_size"))
    return _save_copy(head, out_dir, input_size=input_size, backbone_hash=config.get("backbone_hash"),
                      training={**config.get("training", {}), "input_size": trained_at},
                      meta={**config.get("meta", {}), "input_size_from": config["hash"]})


def _save_copy(head: RaptorHead, out_dir: str | Path, *, input_size: int | None, backbone_hash: str | None,
               training: dict[str, Any] | None, meta: dict[str, Any]) -> RaptorHead:
    """Save `head`'s weights as a new head artifact with another input size / binding / record."""
    config = head.config
    copy = RaptorHead(head.embed_dim, head.n_parcels, head.dropout, position=head.position, grid=head.grid,
                      input_size=input_size)
    copy.load_state_dict(head.state_dict(), strict=True)
    save_head(copy, out_dir, backbone_hash=backbone_hash, loss=config.get("loss"), training=training, meta=meta,
              run_info=config.get("run_info"))
    return copy.eval()


def rebind(path: str | Path, backbone: Any, out_dir: str | Path) -> RaptorHead:
    """Save a copy of the head at `path` to `out_dir`, bound to `backbone`: a gray-matched copy
    (`alan backbone gray-match`) of the backbone the head was trained on, same weights. Refuses
    any other backbone; the source head's hash is kept in ``meta.rebound_from``."""
    head = load_head(path)
    config = head.config
    origin = backbone.config.meta.get("gray_match", {}).get("from")
    if origin is None or origin != config.get("backbone_hash"):
        raise ArtifactError(f"{resolve_head_dir(path)}: head was trained on backbone {config.get('backbone_hash')}; "
                            f"{backbone.hash} is not a gray-matched copy of it")
    return _save_copy(head, out_dir, input_size=head.input_size, backbone_hash=backbone.hash,
                      training=config.get("training"), meta={**config.get("meta", {}), "rebound_from": config["hash"]})


def resolve_head_dir(path: str | Path) -> Path:
    """An artifact folder, or a ``raptor train`` run folder holding one in ``head/``."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "head" / "config.json").is_file():
        return path / "head"
    return path


def load_head(path: str | Path, backbone: Any = None) -> RaptorHead:
    """Load a ``raptor_head`` artifact (in eval mode). With `backbone`, refuse one of another hash or width."""
    path = resolve_head_dir(path)
    tensors, config = load_artifact(path, KIND)
    if backbone is not None:
        want, got = config.get("backbone_hash"), getattr(backbone, "hash", None)
        if want != got:
            raise ArtifactError(f"{path}: head was trained on backbone {want}, but the given backbone is {got}")
        if getattr(backbone, "embed_dim", config["embed_dim"]) != config["embed_dim"]:
            raise ArtifactError(f"{path}: head expects {config['embed_dim']}-channel tokens, backbone gives {backbone.embed_dim}")
    head = RaptorHead(config["embed_dim"], config["n_parcels"], config.get("dropout", 0.2),
                      position=float(config.get("position", 0.0)), grid=config.get("grid"),
                      input_size=config.get("input_size"))
    try:
        head.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{path}: weights do not fit a RAPTOR head ({str(e).splitlines()[0]})") from None
    head.hash = config["hash"]
    head.config = config
    return head.eval()
