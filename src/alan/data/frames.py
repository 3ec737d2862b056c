"""Every frame of a list of `Record`s as one dataset (DINO trains on all frames of all TRAIN videos).

`FrameDataset` lists frames without decoding anything (it uses `Record.n_frames`), decodes a
video when one of its frames is asked for and keeps the last few decoded videos in a small LRU
cache (one per DataLoader worker: each worker holds its own copy of the dataset). Frames are
resized to a square `size` (bilinear, antialiased: the same resize as `Backbone.prepare`) and
returned as uint8; non-uint8 sequences (MR) are scaled per record from their 0.5/99.5
percentiles. `FrameSampler` shuffles in windows of a few records so that the caches hit, is
seeded by (seed, epoch), splits across DDP ranks like `DistributedSampler`, and can skip the
batches a resumed run has already seen; `FrameDataModule` wires them for Lightning.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from alan.errors import DataError
from alan.records import Record
from alan.transforms.intensity import gray_histogram, to_uint8
from alan.transforms.spatial import resize_uint8 as resize_frames


class FrameDataset(torch.utils.data.Dataset):
    """All frames of `records`: item i -> (uint8 frame (1, size, size), i).

    Args:
        records: the records (e.g. ``dataset.split("train")``); each needs `n_frames`.
        size: square size the frames are resized to (None: keep; then all must share a size).
        cache_videos: decoded videos kept per worker.
    """

    def __init__(self, records: Sequence[Record], size: int | None = None, cache_videos: int = 32):
        self.records = list(records)
        self.size = size
        self.cache_videos = max(1, cache_videos)
        counts = []
        for r in self.records:
            if r.n_frames is None:
                raise DataError(r.source or r.id, "record does not say its number of frames (n_frames)")
            counts.append(int(r.n_frames))
        self.counts = np.asarray(counts, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.decoded = 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def locate(self, index: int) -> tuple[int, int]:
        """Dataset index -> (record position, frame index in that record)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        r = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return r, int(index - self.offsets[r])

    def video(self, r: int) -> np.ndarray:
        """Decoded, resized uint8 frames (T, S, S) of record position `r` (LRU-cached)."""
        if r in self._cache:
            self._cache.move_to_end(r)
            return self._cache[r]
        rec = self.records[r]
        frames = np.asarray(rec.frames)
        if frames.ndim == 4 and frames.shape[-1] in (3, 4):  # colour despite the contract: average to gray
            frames = frames[..., :3].mean(axis=-1).astype(frames.dtype)
        if frames.ndim == 2:
            frames = frames[None]
        if frames.ndim != 3:
            raise DataError(rec.source or rec.id, f"expected frames (T, H, W), got shape {frames.shape}")
        if len(frames) != self.counts[r]:
            raise DataError(rec.source or rec.id, f"record says {self.counts[r]} frames but decodes to {len(frames)}")
        frames = resize_frames(to_uint8(frames), self.size)
        self.decoded += 1
        self._cache[r] = frames
        while len(self._cache) > self.cache_videos:
            self._cache.popitem(last=False)
        return frames

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        r, t = self.locate(int(index))
        return torch.from_numpy(np.ascontiguousarray(self.video(r)[t]))[None], int(index)

    def gray_histogram(self, max_records: int | None = None) -> np.ndarray:
        """Counts of the 256 gray levels of the (resized, uint8) frames; `max_records` as in `mean_std`."""
        hist = np.zeros(256, np.int64)
        for r in self._sample(max_records):
            hist += gray_histogram(self.video(int(r)))
        if hist.sum() == 0:
            raise DataError(None, "no frames to take a gray histogram from")
        return hist

    def _sample(self, max_records: int | None) -> np.ndarray:
        order = np.arange(len(self.records))
        if max_records is not None and max_records < len(order):
            order = np.unique(np.linspace(0, len(order) - 1, max_records).round().astype(int))
        return order

    def mean_std(self, max_records: int | None = None) -> tuple[float, float]:
        """Mean and std of the (resized, uint8/255) pixel values over all frames.

        One channel (gray); `max_records` limits the pass to evenly spaced records.
        """
        s = s2 = n = 0.0
        for r in self._sample(max_records):
            v = self.video(int(r)).astype(np.float64) / 255.0
            s += v.sum()
            s2 += np.square(v).sum()
            n += v.size
        if n == 0:
            raise DataError(None, "no frames to compute mean/std from")
        mean = s / n
        return float(mean), float(math.sqrt(max(s2 / n - mean * mean, 0.0)))


def fingerprint(records: Sequence[Record], format: str = "", **extra: Any) -> str:
    """sha256 over the sorted (record id, n_frames), the format and `extra` (e.g. split, size)."""
    items = sorted((r.id, int(r.n_frames or 0)) for r in records)
    payload = json.dumps({"format": format, "records": items, **extra}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class FrameSampler(Sampler[int]):
    """Epoch-seeded frame order, shuffled within windows of `window` records, split over ranks.

    Records are permuted, grouped `window` at a time, and the frames of each group shuffled
    together, so consecutive batches come from a few videos that the per-worker caches hold.
    ``window >= len(records)`` is a plain full shuffle. Rank r of w takes every w-th index of the
    (padded) order, as `DistributedSampler` does. ``skip`` drops the first indices of the next
    iteration only (a resumed epoch).
    """

    def __init__(self, dataset: FrameDataset, seed: int = 0, window: int = 16, shuffle: bool = True,
                 num_replicas: int = 1, rank: int = 0):
        self.offsets = dataset.offsets
        self.seed, self.window, self.shuffle = seed, max(1, window), shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> np.ndarray:
        """The full frame order of `epoch` (all ranks)."""
        n = int(self.offsets[-1])
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, epoch])
        recs = rng.permutation(len(self.offsets) - 1)
        parts = []
        for k in range(0, len(recs), self.window):
            idx = np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in recs[k:k + self.window]])
            parts.append(rng.permutation(idx))
        return np.concatenate(parts) if parts else np.arange(0)

    def __len__(self) -> int:
        return math.ceil(int(self.offsets[-1]) / self.num_replicas)

    def __iter__(self):
        order = self.order(self.epoch)
        total = len(self) * self.num_replicas
        if total > len(order) and len(order):
            order = np.concatenate([order, order[: total - len(order)]])
        mine = order[self.rank:total:self.num_replicas][self.skip:]
        self.skip = 0
        return iter(mine.tolist())


class ResumableLoader(DataLoader):
    """A DataLoader over a `FrameSampler` that Lightning can resume mid-epoch.

    `progress` returns (epoch, batches consumed in it); Lightning stores ``state_dict()`` in its
    checkpoints and hands it back on resume, where the sampler skips the consumed batches.
    """

    def __init__(self, *args: Any, progress: Callable[[], tuple[int, int]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.progress() if self.progress else (self.sampler.epoch, 0)
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = int(state.get("epoch", 0)), int(state.get("batches", 0))
        if batches >= len(self):  # the checkpoint closed its epoch
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.skip = batches * self.batch_size


class FrameDataModule(L.LightningDataModule):
    """Lightning data for frame-level self-supervision: resumable, DDP-split, per-worker caches.

    `batch_size` is per device (DINO's ``batch_size_per_gpu``). Use it with
    ``use_distributed_sampler=False`` (the sampler splits across ranks itself).
    """

    def __init__(self, dataset: FrameDataset, batch_size: int, num_workers: int = 0, seed: int = 0,
                 window: int = 16, shuffle: bool = True):
        super().__init__()
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.seed, self.window, self.shuffle = seed, window, shuffle

    def train_dataloader(self) -> ResumableLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = FrameSampler(self.dataset, self.seed, self.window, self.shuffle, world, rank)
        if len(sampler) < self.batch_size:
            raise DataError(None, f"{len(self.dataset)} frames over {world} process(es) is fewer than one batch "
                                  f"of {self.batch_size}; lower --batch-size")

        def progress() -> tuple[int, int]:
            loop = trainer.fit_loop
            return loop.epoch_progress.current.processed, loop.epoch_loop.batch_progress.current.ready

        return ResumableLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                               num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                               pin_memory=torch.cuda.is_available(), progress=progress if trainer else None)
