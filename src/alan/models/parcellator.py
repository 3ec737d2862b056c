"""The one inference path of ALAN: frames -> (CLS tokens, parcel maps) in one backbone pass.

`Parcellator` holds a locked backbone and a RAPTOR head at a square working resolution. Every
consumer (segment fit / eval, analyze, views of a recording, the SSCL mask source, the picker)
calls it, so a frame is always prepared the same way: intensities to [0, 1]
(`alan.transforms.intensity`), antialiased bilinear resize (`alan.transforms.spatial`) to the
head's input size, exactly as RAPTOR's training clips are, and for the view features to the size
the view bank was fitted at; the head's logits are upsampled bilinearly to the frame size before
the argmax (`RaptorHead.parcels`, in chunks so that K x H x W logits of large frames never all
sit in memory).

`Parcellator.load()` with no paths uses the backbone and head shipped with alan (trained on the
built-in phantoms) and says so in `note`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alan.errors import AlanError
from alan.models.backbones import GRID, view_features
from alan.models.raptor import RaptorHead
from alan.transforms.intensity import to_unit
from alan.transforms.spatial import resize_unit

#: Logit elements (K x H x W x frames) upsampled at once.
CHUNK_ELEMENTS = 1 << 24


def parcel_dtype(n_parcels: int) -> np.dtype:
    return np.dtype(np.uint8) if n_parcels <= 256 else np.dtype(np.uint16)


def _device_of(module: torch.nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _as_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    frames_np = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames_np.ndim != 3:
        raise AlanError(f"frames must be (T, H, W), got shape {frames_np.shape}")
    return frames_np


@torch.no_grad()
def grid_logits(head: RaptorHead, tokens: torch.Tensor) -> torch.Tensor:
    """The head's logits of patch tokens (N, g*g, D) on the token grid: (N, K, g, g)."""
    logits = head(tokens)
    g = head.grid_of(logits.shape[1])
    return logits.transpose(1, 2).reshape(len(tokens), head.n_parcels, g, g)


@torch.no_grad()
def compute_tokens_and_logits(backbone: Any, head: RaptorHead, frames: np.ndarray | torch.Tensor,
                              batch_size: int = 32, features: str | None = "cls", view_size: int | None = None
                              ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(view features (T, F), token-grid logits (T, K, g, g)) of frames (T, H, W) (uint8, float in
    [0, 1], or MR intensities).

    The logits come from frames fed at the head's input size; the view features (`features`: "cls"
    or "grid", see `view_features`) from frames at `view_size` (the size the view bank was fitted
    at, `alan.pipelines.views.bank_input_size`; None: the backbone's own size), from the same pass
    when the two sizes agree, else from a second pass at `view_size`. With `features=None` there
    are none (None) and that pass is skipped."""
    frames_np = _as_frames(frames)
    native = backbone.config.img_size
    size = head.input_size or native
    view = view_size or native
    if features is not None and view != size:
        backbone.grid_at(view)  # a size off the patch grid is refused before any work
    device = _device_of(head)
    feats, out = [], []
    for i in range(0, len(frames_np), batch_size):
        unit = to_unit(frames_np[i:i + batch_size])
        cls, tokens = backbone(resize_unit(unit, size), size)
        out.append(grid_logits(head, tokens.to(device)).cpu())
        if features is not None:
            if view != size:
                cls, tokens = backbone(resize_unit(unit, view), view)
            feats.append(view_features(cls, tokens, features).float().cpu())
    if not out:
        g = backbone.grid_at(size)
        dim = backbone.embed_dim * (1 if features == "cls" else GRID * GRID)
        return (torch.empty(0, dim) if features else None), torch.empty(0, head.n_parcels, g, g)
    return (torch.cat(feats) if features else None), torch.cat(out)


@torch.no_grad()
def upsample_argmax(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Parcels (T, H, W) from grid logits (T, K, g, g): `RaptorHead.parcels_of_logits` (bilinear
    upsampling before the argmax), a chunk of frames at a time."""
    T, K = logits.shape[:2]
    H, W = size
    per = max(1, CHUNK_ELEMENTS // max(1, K * H * W))
    out = np.empty((T, H, W), dtype=parcel_dtype(K))
    for i in range(0, T, per):
        chunk = logits[i:i + per].float().flatten(2).transpose(1, 2)  # (t, g*g, K)
        out[i:i + per] = RaptorHead.parcels_of_logits(chunk, (H, W)).numpy()
    return out


def compute_cls_and_parcels(backbone: Any, head: RaptorHead, frames: np.ndarray | torch.Tensor,
                            batch_size: int = 32, features: str = "cls", view_size: int | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """(view features (T, F) float32, by default the CLS tokens, of frames at `view_size` (None: the
    backbone's own size), parcel ids (T, H, W) at the frames' own resolution, uint8 for K <= 256 else
    uint16) in one backbone pass (two when the head's input size is not the view size, see
    `compute_tokens_and_logits`)."""
    head.eval()
    cls, logits = compute_tokens_and_logits(backbone, head, frames, batch_size, features, view_size)
    return cls.numpy(), upsample_argmax(logits, tuple(_as_frames(frames).shape[-2:]))


def compute_parcels(backbone: Any, head: RaptorHead, frames: np.ndarray | torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Parcel ids (T, H, W) at the frames' own resolution; uint8 (K <= 256) or uint16."""
    head.eval()
    _, logits = compute_tokens_and_logits(backbone, head, frames, batch_size, features=None)
    return upsample_argmax(logits, tuple(_as_frames(frames).shape[-2:]))


def batches_across(items: Iterable[tuple[Hashable, np.ndarray]], batch_size: int
                   ) -> Iterator[tuple[np.ndarray, list[tuple[Hashable, int, bool]]]]:
    """Frames of consecutive items (key, frames (T, H, W)) stacked into batches of `batch_size` frames
    across item boundaries: (frames (n, H, W), [(key, rows of this batch, last piece of the item)]),
    the rows in item order. Items are pulled lazily: at most one batch plus the item being cut is held."""
    if batch_size < 1:
        raise AlanError(f"batch size must be at least 1, got {batch_size}")
    todo: list[list[Any]] = []  # [key, frames, next row]
    held = 0
    items = iter(items)
    exhausted = False
    while True:
        while held < batch_size and not exhausted:
            nxt = next(items, None)
            if nxt is None:
                exhausted = True
                break
            key, frames = nxt
            frames = np.asarray(frames)
            if frames.ndim != 3 or (todo and frames.shape[1:] != todo[0][1].shape[1:]):
                raise AlanError(f"item {key!r}: frames of shape {frames.shape} cannot be stacked with the others")
            todo.append([key, frames, 0])
            held += len(frames)
        if not todo:
            return
        parts, pieces, room = [], [], batch_size
        while todo and (room > 0 or len(todo[0][1]) == todo[0][2]):
            key, frames, at = todo[0]
            take = min(room, len(frames) - at)
            parts.append(frames[at:at + take])
            room -= take
            todo[0][2] = at + take
            last = todo[0][2] == len(frames)
            pieces.append((key, take, last))
            if last:
                todo.pop(0)
        held -= batch_size - room
        yield np.concatenate(parts), pieces


class Parcellator:
    """Backbone + RAPTOR head at a working resolution: frames -> parcel maps (N, size, size).

    Frames given to `__call__` / `cls_and_parcels` are already at the working size (see
    `alan.transforms.spatial.to_work`); parcel maps come back at that size.
    """

    def __init__(self, backbone: Any, head: Any, work_size: int = 112, batch_size: int = 32):
        self.backbone, self.head, self.work_size, self.batch_size = backbone, head, work_size, batch_size
        self.note: str | None = None

    @classmethod
    def load(cls, backbone: str | Path | None = None, head: str | Path | None = None, *, work_size: int = 112,
             batch_size: int = 32, device: str | torch.device = "cpu") -> Parcellator:
        """Load artifacts; with neither path, the backbone and head shipped with alan (see `note`)."""
        from alan.models.backbones import bundled_backbone, load_backbone
        from alan.models.raptor import bundled_head, load_head

        note = None
        if backbone is None and head is None:
            backbone, head = bundled_backbone(), bundled_head()
            note = f"using the backbone and RAPTOR head shipped with alan ({Path(head).name}, trained on the built-in phantoms)"
        elif head is None:
            raise AlanError("give --head (a RAPTOR head trained on this backbone), or neither --backbone nor --head "
                            "to use the shipped pair")
        elif backbone is None:  # the head records its backbone's hash: a head of another backbone is refused
            backbone = bundled_backbone()
        bb = load_backbone(backbone, device=device)
        out = cls(bb, load_head(head, backbone=bb).to(device), work_size=work_size, batch_size=batch_size)
        out.note = note
        return out

    @property
    def n_parcels(self) -> int:
        return int(self.head.n_parcels)

    @property
    def provenance(self) -> dict[str, Any]:
        return {"backbone_hash": getattr(self.backbone, "hash", None), "head_hash": getattr(self.head, "hash", None),
                "n_parcels": int(getattr(self.head, "n_parcels", 0)) or None, "work_size": self.work_size}

    def cls_and_parcels(self, frames: np.ndarray, features: str = "cls", view_size: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """(view features (N, F) float32, by default the CLS tokens, at `view_size`, parcel maps (N, H, W))
        of one pass (`compute_cls_and_parcels`)."""
        return compute_cls_and_parcels(self.backbone, self.head, frames, self.batch_size, features, view_size)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return compute_parcels(self.backbone, self.head, frames, batch_size=self.batch_size)

    def forward_batch(self, frames: np.ndarray, features: str | None = "cls", view_size: int | None = None
                      ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(view features (N, F) at `view_size` or None, token-grid logits (N, K, g, g)) of work frames
        (N, H, W) in one backbone batch (`compute_tokens_and_logits`)."""
        self.head.eval()
        return compute_tokens_and_logits(self.backbone, self.head, frames, max(1, len(frames)), features, view_size)

    def parcels_of_logits(self, logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """Parcel maps (T, H, W) of token-grid logits (T, K, g, g), as `__call__` makes them."""
        return upsample_argmax(logits, size)

    def cls_and_logits_across(self, items: Iterable[tuple[Hashable, np.ndarray]], batch_size: int | None = None,
                              features: str | None = "cls", view_size: int | None = None
                              ) -> Iterator[tuple[Hashable, torch.Tensor | None, torch.Tensor]]:
        """(key, view features (T, F), token-grid logits (T, K, g, g)) of each item (key, work frames (T, H, W)),
        in item order, with frames of several items stacked into one backbone batch (`batches_across`):
        many short recordings run at the backbone's batch speed. Keys must be distinct. The view
        features are `features` ("cls", "grid") at `view_size` or None (see `compute_tokens_and_logits`)."""
        done: dict[Hashable, list[tuple[torch.Tensor | None, torch.Tensor]]] = {}
        for frames, pieces in batches_across(items, batch_size or self.batch_size):
            cls, logits = self.forward_batch(frames, features, view_size)
            row = 0
            for key, n, last in pieces:
                done.setdefault(key, []).append((None if cls is None else cls[row:row + n], logits[row:row + n]))
                row += n
                if last:
                    parts = done.pop(key)
                    yield (key, torch.cat([c for c, _ in parts]) if features else None,
                           torch.cat([g for _, g in parts]))

    def cls_and_parcels_across(self, items: Iterable[tuple[Hashable, np.ndarray]], batch_size: int | None = None
                               ) -> Iterator[tuple[Hashable, np.ndarray, np.ndarray]]:
        """(key, CLS (T, D) float32, parcel maps (T, H, W)) of each item, batched across items: what
        `cls_and_parcels` gives item by item, up to float rounding of the batch composition."""
        sizes: dict[Hashable, tuple[int, int]] = {}

        def noted():
            for key, frames in items:
                sizes[key] = tuple(np.shape(frames)[-2:])
                yield key, frames

        for key, cls, logits in self.cls_and_logits_across(noted(), batch_size):
            yield key, cls.float().numpy(), self.parcels_of_logits(logits, sizes.pop(key))
