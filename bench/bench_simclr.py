"""SimCLR training throughput: batched tensor views vs lightly's SimCLRTransform + DataLoader.

Both arms train the same encoder + projection head with the same NT-Xent loss, batch size and
number of steps, in the same run, on the same 64 px grayscale frames. The baseline is what the
lightly docs show: PIL images -> `SimCLRTransform` (configured to the paper's augmentations:
crop, contrast, flips, rotation; no colour jitter, grayscale or blur) per image in a DataLoader
-> two views per image. Ours: uint8 tensors -> `SimCLRViews.pair` on the whole batch inside the
step. Prints images/s (one image = one source frame, i.e. two views) and the ratio.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_simclr.py [--arch vgg_tiny] [--size 64] [--steps 20]

(one thread: on a shared 2-core machine, thread wake-ups swamp both arms with 2 threads).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from lightly.transforms import SimCLRTransform
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from alan.data.cmr import FrameDataset
from alan.models.encoders import create_encoder
from alan.models.simclr import SimCLR
from alan.transforms.simclr_views import SimCLRViews


class PILFrames(Dataset):
    def __init__(self, frames: np.ndarray, transform):
        self.images = [Image.fromarray(f) for f in frames]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i])


def collate_views(batch):
    v0 = torch.stack([b[0] for b in batch])
    v1 = torch.stack([b[1] for b in batch])
    return v0, v1


def frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Disc-and-ring 'hearts' on a noisy background, uint8 (n, size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = rng.integers(0, 60, size=(n, size, size)).astype(np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        r = rng.uniform(0.08, 0.2) * size
        d = np.hypot(yy - cy, xx - cx)
        out[i][d < r] = 220
        out[i][(d >= r) & (d < r * 1.4)] = 110
    return out


def time_steps(module: SimCLR, batches, steps: int, warmup: int, step_fn) -> list[float]:
    opt = module.configure_optimizers()
    it = iter(batches)
    times = []
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it)
        loss = step_fn(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vgg_tiny")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers for the baseline")
    args = ap.parse_args()
    torch.manual_seed(0)
    n = args.batch * (args.steps + args.warmup)
    data = frames(n, args.size)
    views = SimCLRViews()
    lightly_tf = SimCLRTransform(input_size=args.size, cj_prob=1.0, cj_strength=1.0, cj_bright=0.0,
                                 cj_contrast=views.contrast, cj_sat=0.0, cj_hue=0.0, min_scale=views.min_scale,
                                 random_gray_scale=0.0, gaussian_blur=0.0, vf_prob=views.vflip_prob,
                                 hf_prob=views.hflip_prob, rr_prob=1.0, rr_degrees=views.rotation, normalize=None)

    def make_module() -> SimCLR:
        torch.manual_seed(0)
        return SimCLR(create_encoder(args.arch, img_size=args.size, seed=0), views, lr=1e-4)

    # ours: uint8 tensors, views made on the batch inside the step
    ours = make_module()
    dl_ours = DataLoader(FrameDataset(data), batch_size=args.batch, shuffle=True, drop_last=True)
    t_ours = time_steps(ours, dl_ours, args.steps, args.warmup, lambda b: ours.loss(b))

    # baseline: lightly SimCLRTransform per PIL image in a DataLoader
    base = make_module()
    dl_base = DataLoader(PILFrames(data, lightly_tf), batch_size=args.batch, shuffle=True, drop_last=True,
                         num_workers=args.workers, collate_fn=collate_views, persistent_workers=args.workers > 0)

    def base_step(b):
        v0, v1 = b
        z = base(torch.cat([v0, v1]))
        return base.criterion(z[: len(v0)], z[len(v0):])

    t_base = time_steps(base, dl_base, args.steps, args.warmup, base_step)

    # augmentation alone (no model), same batches
    x = torch.from_numpy(data[: args.batch])[:, None]
    aug_ours = []
    for _ in range(10):
        t0 = time.perf_counter()
        views.pair(x.float() / 255)
        aug_ours.append(time.perf_counter() - t0)
    pil = [Image.fromarray(f) for f in data[: args.batch]]
    aug_base = []
    for _ in range(3):
        t0 = time.perf_counter()
        [lightly_tf(im) for im in pil]
        aug_base.append(time.perf_counter() - t0)

    med = statistics.median
    ips_ours, ips_base = args.batch / med(t_ours), args.batch / med(t_base)
    print(f"SimCLR training step, {args.arch} at {args.size} px, batch {args.batch}, {args.steps} steps "
          f"(median), torch threads {torch.get_num_threads()}, baseline workers {args.workers}")
    print(f"  lightly SimCLRTransform + DataLoader : {ips_base:8.1f} images/s")
    print(f"  alan SimCLRViews (batched tensors)   : {ips_ours:8.1f} images/s   ratio {ips_ours / ips_base:.2f}x")
    print(f"augmentation only, two views of {args.batch} frames:")
    print(f"  lightly SimCLRTransform per image    : {args.batch / med(aug_base):8.1f} images/s")
    print(f"  alan SimCLRViews.pair on the batch   : {args.batch / med(aug_ours):8.1f} images/s   "
          f"ratio {med(aug_base) / med(aug_ours):.1f}x")


if __name__ == "__main__":
    main()
