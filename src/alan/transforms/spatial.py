"""Spatial transforms: frames to the model's square grid and predictions back to the frame.

One resize for training and inference: antialiased bilinear (torch), applied to unit-range
frames (`alan.transforms.intensity.to_unit`). Masks and label maps go back with nearest.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from alan.transforms.intensity import to_unit


def resize_unit(frames: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(T, H, W) float in [0, 1] -> float (T, size, size), bilinear with antialiasing."""
    x = torch.as_tensor(frames, dtype=torch.float32)
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x[:, None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[:, 0]


def resize_uint8(frames: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 (T, H, W) -> uint8 (T, size, size): `resize_unit` on frames / 255, rounded back."""
    if size is None or frames.shape[-2:] == (size, size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).float()
    y = F.interpolate(x[:, None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return y[:, 0].round_().clamp_(0, 255).to(torch.uint8).numpy()


def to_work(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Native frames (each (H, W), any size and dtype) -> float32 (N, size, size) in [0, 1]:
    `to_unit` per frame, then `resize_unit`, exactly what RAPTOR's training clips go through."""
    out = np.empty((len(images), size, size), np.float32)
    for i, img in enumerate(images):
        out[i] = resize_unit(to_unit(np.asarray(img))[None], size)[0].numpy()
    return out


def pad_to_square(stack: np.ndarray, size: int, *, nearest: bool = False) -> np.ndarray:
    """(F, H, W) -> float32 (F, size, size): zero-pad to a centred square, then resize
    (bilinear with antialiasing, or nearest for masks)."""
    f, h, w = stack.shape
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    sq = np.zeros((f, s, s), dtype=np.float32)
    sq[:, top:top + h, left:left + w] = stack
    if s == size:
        return sq
    if not nearest:
        return resize_unit(sq, size).numpy()
    return F.interpolate(torch.from_numpy(sq)[:, None], size=(size, size), mode="nearest-exact")[:, 0].numpy()


def masks_to_work(masks: Sequence[np.ndarray], size: int) -> np.ndarray:
    """bool masks (each (H, W)) -> bool (N, size, size), nearest."""
    return np.stack([cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0 for m in masks])


def labels_to_native(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of one label map (H, W) to `shape`."""
    if labels.shape == tuple(shape):
        return labels
    h, w = shape
    return cv2.resize(labels.astype(np.uint16), (w, h), interpolation=cv2.INTER_NEAREST).astype(labels.dtype)


def masks_to_native(pred: np.ndarray, shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Working-size masks (N, S, S) -> one bool mask per frame at its own `shapes[i]`."""
    return [labels_to_native(p.astype(np.uint8), shape) > 0 for p, shape in zip(pred, shapes)]
