"""DINO training samples/s and peak memory: our batched on-device multi-crop vs lightly's
`DINOTransform` (PIL, per image) in a DataLoader, on the same model, data and views.

Each variant runs in its own subprocess (so ru_maxrss is its own) through the same Lightning
`DINO` module; the baseline's module only skips our augmentation (its batches arrive as views).
Also reported: augmentation alone (frames -> views) per second for both.

    python bench/bench_dino_train.py [--arch vit_micro_p8_64 vit_tiny_p8_112] [--steps 6] [--n-local 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import torch


def make_records(n: int, t: int, size: int):
    from alan.records import Record

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    recs = []
    for i in range(n):
        frames = []
        for k in range(t):
            r = size * (0.2 + 0.05 * np.sin(2 * np.pi * k / t))
            disc = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < r * r
            frames.append((disc * 150 + rng.integers(0, 60, (size, size))).astype(np.uint8))
        v = np.stack(frames)
        recs.append(Record(id=f"v{i}", load_frames=lambda v=v: v, n_frames=t, split="train"))
    return recs


def run_variant(variant: str, arch: str, batch: int, steps: int, n_local: int, out_dim: int, workers: int) -> dict:
    import lightning as L
    from PIL import Image

    from alan.data.frames import FrameDataModule, FrameDataset
    from alan.models.backbones import arch_spec
    from alan.models.dino import DINO, DINOConfig

    torch.manual_seed(0)
    spec = arch_spec(arch)
    recs = make_records(8, 16, spec.img_size)
    ds = FrameDataset(recs, size=spec.img_size)
    mean, std = ds.mean_std()
    cfg = DINOConfig(arch=arch, out_dim=out_dim, n_local=n_local)
    tracemalloc.start()

    if variant == "ours":
        module = DINO(cfg, mean=mean, std=std)
        data = FrameDataModule(ds, batch, num_workers=workers).train_dataloader()
        mc = module.multicrop
        frames = torch.stack([ds[i][0] for i in range(batch)])

        def augment():
            return mc(frames, keys=torch.arange(batch))
    else:
        from lightly.transforms import DINOTransform

        tf = DINOTransform(global_crop_size=spec.img_size, local_crop_size=module_local_size(cfg, spec),
                           n_local_views=n_local, cj_prob=0.8, random_gray_scale=0.0,
                           normalize={"mean": [mean] * 3, "std": [std] * 3})

        class Views(torch.utils.data.Dataset):
            def __len__(self):
                return len(ds)

            def __getitem__(self, i):
                return tf(Image.fromarray(ds[i][0][0].numpy()).convert("RGB"))

        class Baseline(DINO):
            def on_after_batch_transfer(self, batch, dataloader_idx):
                return batch

        module = Baseline(cfg, mean=mean, std=std)
        data = torch.utils.data.DataLoader(Views(), batch_size=batch, shuffle=True, drop_last=True,
                                           num_workers=workers, persistent_workers=workers > 0)
        pil = [Image.fromarray(ds[i][0][0].numpy()).convert("RGB") for i in range(batch)]

        def augment():
            return [tf(p) for p in pil]

    augment()
    t = time.perf_counter()
    for _ in range(3):
        augment()
    aug_rate = 3 * batch / (time.perf_counter() - t)

    stamps: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, b, i):
            stamps.append(time.perf_counter())

    trainer = L.Trainer(max_steps=steps + 2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Clock()],
                        use_distributed_sampler=False)
    trainer.fit(module, train_dataloaders=data)
    _, py_peak = tracemalloc.get_traced_memory()
    rate = batch * (len(stamps) - 2) / (stamps[-1] - stamps[1])
    return {"variant": variant, "arch": arch, "samples_per_s": rate, "augment_samples_per_s": aug_rate,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tracemalloc_peak_mb": py_peak / 2**20}


def module_local_size(cfg, spec) -> int:
    from alan.transforms.multicrop import default_local_size

    return cfg.local_size or default_local_size(spec.img_size, spec.patch_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", nargs="+", default=["vit_micro_p8_64", "vit_tiny_p8_112"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6, help="Timed steps (after 2 warm-up steps).")
    ap.add_argument("--n-local", type=int, default=8)
    ap.add_argument("--out-dim", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        import warnings

        warnings.filterwarnings("ignore")
        print("RESULT " + json.dumps(run_variant(args.variant, args.arch[0], args.batch, args.steps, args.n_local,
                                                 args.out_dim, args.workers)))
        return
    print(f"batch {args.batch}, 2 global + {args.n_local} local crops, out_dim {args.out_dim}, workers {args.workers}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    for arch in args.arch:
        res = {}
        for variant in ("ours", "lightly"):
            cmd = [sys.executable, __file__, "--variant", variant, "--arch", arch, "--batch", str(args.batch),
                   "--steps", str(args.steps), "--n-local", str(args.n_local), "--out-dim", str(args.out_dim),
                   "--workers", str(args.workers)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                sys.exit(f"{variant} failed:\n{out.stderr[-2000:]}")
            res[variant] = json.loads(line[0][7:])
        o, b = res["ours"], res["lightly"]
        print(f"{arch:18s} train samples/s  ours {o['samples_per_s']:7.1f}  lightly {b['samples_per_s']:7.1f}  "
              f"ratio {o['samples_per_s'] / b['samples_per_s']:.2f}")
        print(f"{'':18s} augment samples/s ours {o['augment_samples_per_s']:7.1f}  lightly {b['augment_samples_per_s']:7.1f}  "
              f"ratio {o['augment_samples_per_s'] / b['augment_samples_per_s']:.2f}")
        print(f"{'':18s} peak RSS MB       ours {o['maxrss_mb']:7.0f}  lightly {b['maxrss_mb']:7.0f}   "
              f"tracemalloc peak MB ours {o['tracemalloc_peak_mb']:.1f} lightly {b['tracemalloc_peak_mb']:.1f}")


if __name__ == "__main__":
    main()
