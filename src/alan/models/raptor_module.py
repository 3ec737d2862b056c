"""Training RAPTOR on a locked backbone with the STRAPTOR loss (ALAN paper, sections 3 and 4.2).

Clips of 16 frames (period 2, random start) from the training records go through the frozen
backbone (eval mode, no gradients); the head is trained with Adam (lr 5e-3) on the STRAPTOR
loss. Lightning runs the loop (`alan.training`), so devices, resume, precision and logs are the
shared ones.

Feature cache: the backbone is frozen, so a frame's tokens never change. `TokenCache` keeps
the tokens of every frame of the training records (float16), filled lazily: a frame is pushed
through the backbone the first time a clip uses it and read back afterwards, so the cache never
costs extra backbone passes, and clips whose frames are all cached are not even decoded. Every
step reads tokens through the float16 cache, so the head sees the same features in every epoch.
``cache="auto"`` turns it on in memory when it fits in `cache_budget_bytes` (see docs/raptor.md
for the measurement behind this rule); "disk" keeps it in a memmap file in the run folder.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from alan.data.clips import ClipDataset, collate_clips
from alan.errors import AlanError
from alan.models.raptor import RaptorHead, save_head
from alan.models.straptor import PRESETS, StraptorConfig, StraptorLoss
from alan.records import Record
from alan.training import RunOptions, fit, last_checkpoint, launched_rank, run_folder

CACHE_MODES = ("auto", "memory", "disk", "off")


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux MemAvailable; else total physical / 2)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def default_cache_budget() -> int:
    """Half of the memory available now."""
    return available_memory() // 2


class TokenCache:
    """Patch tokens (float16) of every frame of a list of records, filled on first use."""

    def __init__(self, n_frames: list[int], n_tokens: int, dim: int, path: str | Path | None = None):
        self.offsets = np.concatenate([[0], np.cumsum(n_frames)]).astype(np.int64)
        total = int(self.offsets[-1])
        self.shape = (total, n_tokens, dim)
        self.path = None if path is None else Path(path)
        if self.path is None:
            self.data = torch.empty(self.shape, dtype=torch.float16)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.data = torch.from_numpy(np.memmap(self.path, dtype=np.float16, mode="w+", shape=self.shape))
        self.filled = torch.zeros(total, dtype=torch.bool)

    @staticmethod
    def nbytes_for(n_frames: int, n_tokens: int, dim: int) -> int:
        return n_frames * n_tokens * dim * 2

    @property
    def nbytes(self) -> int:
        return self.nbytes_for(*self.shape)

    def rows(self, index: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
        """Cache rows (B, L) of the frames `frame_idx` (B, L) of records `index` (B,)."""
        return torch.as_tensor(self.offsets)[index.cpu()][:, None] + frame_idx.cpu()

    def has(self, index: int, frame_idx: np.ndarray) -> bool:
        return bool(self.filled[int(self.offsets[index]) + torch.as_tensor(frame_idx)].all())

    def get(self, rows: torch.Tensor) -> torch.Tensor:
        return self.data[rows.flatten()].reshape(*rows.shape, *self.shape[1:])

    def put(self, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        flat = rows.flatten()
        self.data[flat] = tokens.detach().reshape(len(flat), *self.shape[1:]).to("cpu", torch.float16)
        self.filled[flat] = True

    def close(self) -> None:
        if self.path is not None:
            del self.data
            self.path.unlink(missing_ok=True)
            if self.path.parent.name.startswith(_TEMP_PREFIX):
                self.path.parent.rmdir()


class RaptorModule(L.LightningModule):
    """Frozen backbone + trainable `RaptorHead`, trained with `StraptorLoss`."""

    def __init__(self, backbone: torch.nn.Module, head: RaptorHead, loss: StraptorLoss, lr: float = 5e-3,
                 cache: TokenCache | None = None):
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.head = head
        self.loss = loss
        self.lr = lr
        self.cache = cache
        self.strict_loading = False  # checkpoints leave out the (locked) backbone

    def train(self, mode: bool = True) -> RaptorModule:
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def _backbone_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        B, T = frames.shape[:2]
        _, tokens = self.backbone(frames.reshape(B * T, *frames.shape[2:]).to(self.device), self.head.input_size)
        return tokens.reshape(B, T, *tokens.shape[1:])

    @torch.no_grad()
    def tokens(self, batch: dict[str, Any]) -> torch.Tensor:
        """Backbone tokens (B, T, N, D) of a clip batch, through the cache when there is one."""
        frames = batch["frames"]
        if self.cache is None:
            return self._backbone_tokens(frames).float()
        rows = self.cache.rows(batch["index"], batch["frame_idx"])
        missing = ~self.cache.filled[rows.flatten()].reshape(rows.shape).all(1)
        if missing.any():
            todo = [int(i) for i in torch.nonzero(missing)[:, 0]]
            if isinstance(frames, torch.Tensor):
                stack = frames[todo]
            else:
                if any(frames[i] is None for i in todo):
                    raise RuntimeError("a clip with uncached frames came without its frames")
                stack = torch.stack([frames[i] for i in todo])
            self.cache.put(rows[todo], self._backbone_tokens(stack))
        return self.cache.get(rows).to(self.device).float()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = self.head.standardise(self.tokens(batch))
        logits = self.head(x, standardised=True)
        loss = self.loss(self.head.loss_features(x), logits)
        B = x.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        for kind, value in self.loss.last_terms.items():
            self.log(f"train/{kind}", value, batch_size=B)
        with torch.no_grad():
            used = torch.nn.functional.one_hot(logits.argmax(-1), self.head.n_parcels).amax(2).sum(-1)
        self.log("train/parcels_per_frame", used.float().mean(), prog_bar=True, batch_size=B)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.head.parameters(), lr=self.lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("backbone.")}


class EpochTimer(Callback):
    """Wall time of each training epoch (logged as train/epoch_s; kept in `times`)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._t0)
        pl_module.log("train/epoch_s", self.times[-1])


def choose_cache(mode: str, nbytes: int, budget: int | None = None) -> str:
    """"memory", "disk" or "off"; "auto" is "memory" when the cache fits in the budget, else "off"."""
    if mode not in CACHE_MODES:
        raise AlanError(f"unknown cache mode {mode!r}; expected one of {', '.join(CACHE_MODES)}")
    if mode != "auto":
        return mode
    return "memory" if nbytes <= (default_cache_budget() if budget is None else budget) else "off"


@torch.no_grad()
def token_stats(module: RaptorModule, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the backbone tokens over one pass of `loader`."""
    total, sq, n = 0.0, 0.0, 0
    for batch in loader:
        t = module.tokens(batch).double().flatten(0, 2)
        total, sq, n = total + t.sum(0), sq + (t * t).sum(0), n + t.shape[0]
    mean = total / n
    std = (sq / n - mean * mean).clamp(min=1e-12).sqrt()
    return mean.float().cpu(), std.float().cpu()


def _cache_path(out_dir: Path) -> Path:
    """The disk token cache: in the run folder for rank 0; the other DDP ranks keep theirs in the
    system's temporary folder (only rank 0 writes the run folder, see `alan.training.run_folder`)."""
    rank = launched_rank()
    if rank == 0:
        return out_dir / "token_cache.f16"
    return Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}rank{rank}-")) / "token_cache.f16"


_TEMP_PREFIX = "alan-token-cache-"


RUN_KIND = "raptor_run"
#: Run options that do not change the head (a progress bar; resuming reproduces the uninterrupted
#: run): kept in the artifact's non-hashed ``run_info``.
NOT_HASHED_OPTIONS = ("resume", "progress")


def train_raptor(backbone: Any, records: list[Record], out_dir: str | Path, *, n_parcels: int = 64,
                 loss: StraptorConfig | str = "reference", length: int = 16, period: int = 2, short: str = "pad",
                 lr: float = 5e-3, dropout: float = 0.2, cache: str = "auto", cache_budget: int | None = None,
                 standardize_tokens: bool = False, position: float = 0.0, input_size: int | None = None,
                 opts: RunOptions | None = None, data: dict[str, Any] | None = None) -> RaptorHead:
    """Train a RAPTOR head on `records` with `backbone` locked; save it to ``out_dir/head`` and return it.

    `out_dir` is the run folder (``checkpoints/``, ``logs/``, the head artifact in ``head/``).
    `data` is recorded in the artifact (e.g. dataset path, format, split). `position` > 0 gives the
    head and the loss target the tokens' grid position with that weight (`RaptorHead`; beyond the paper).
    `input_size` is the size frames go to the backbone at (None: the backbone's own; the head
    keeps it, so inference feeds frames the same way).
    """
    opts = opts or RunOptions(batch_size=4)
    out_dir = Path(out_dir)
    cfg = PRESETS[loss] if isinstance(loss, str) else loss
    preset_name = loss if isinstance(loss, str) else "custom"
    grid = backbone.grid_at(input_size)
    size = grid * backbone.config.patch_size
    dataset = ClipDataset(records, length=length, period=period, short=short, size=size)
    if len(dataset) == 0:
        raise AlanError(f"no training records left (given {len(records)}, {dataset.n_skipped} shorter than a clip)")
    n_tokens, dim = grid ** 2, backbone.embed_dim
    nbytes = TokenCache.nbytes_for(sum(dataset.n_frames), n_tokens, dim)
    mode = choose_cache(cache, nbytes, cache_budget)
    with run_folder(out_dir, RUN_KIND):  # a failure before the first checkpoint leaves no run folder
        token_cache = None
        if mode != "off":
            token_cache = TokenCache(dataset.n_frames, n_tokens, dim, _cache_path(out_dir) if mode == "disk" else None)
            dataset.skip_frames = token_cache.has
        L.seed_everything(opts.seed, verbose=False)  # the head's init must not depend on what ran before in the process
        head = RaptorHead(dim, n_parcels, dropout, position=position, grid=grid, input_size=input_size)
        module = RaptorModule(backbone, head, StraptorLoss(cfg), lr=lr, cache=token_cache)
        loader = DataLoader(dataset, batch_size=opts.batch_size, shuffle=True, num_workers=opts.num_workers,
                            collate_fn=collate_clips, persistent_workers=False)
        resuming = opts.resume and last_checkpoint(out_dir) is not None
        if standardize_tokens and not resuming:
            L.seed_everything(opts.seed, verbose=False)
            mean, std = token_stats(module, loader)
            head.token_mean.copy_(mean)
            head.token_std.copy_(std)
        timer = EpochTimer()
        t0 = time.perf_counter()
        try:
            fit(module, opts, out_dir, train_dataloaders=loader, callbacks=[timer], kind=RUN_KIND)
        finally:
            if token_cache is not None:
                token_cache.close()
    head = module.head.cpu().eval()
    training = {
        "run": {k: v for k, v in opts.to_dict().items() if k not in NOT_HASHED_OPTIONS}, "lr": lr, "optimizer": "Adam", "clip_length": length, "period": period,
        "short": short, "cache": mode, "cache_bytes": nbytes, "standardize_tokens": standardize_tokens,
        "n_records": len(dataset), "n_frames": int(sum(dataset.n_frames)), "input_size": input_size,
    }
    save_head(head, out_dir / "head", backbone_hash=getattr(backbone, "hash", None),
              loss={"preset": preset_name, **asdict(cfg)}, training=training,
              meta={"data": data or {}, "backbone_arch": backbone.config.arch, "grid": grid},
              run_info={"epoch_s": timer.times, "wall_s": time.perf_counter() - t0,  # not hashed
                        **{k: getattr(opts, k) for k in NOT_HASHED_OPTIONS}})
    return head
