"""Training steps/s and samples/s of `alan dino train`'s recipes on the same model, data and batch:
``dinov2`` (DINO CLS loss + iBOT masked-patch term + KoLeo, Oquab et al., DINOv2: Learning Robust
Visual Features without Supervision, section 4) against the baseline ``dino`` (the paper's
DINO), printed with the ratio dinov2 / dino.

Both recipes run through the same Lightning `DINO` module and `train_dino`'s data path
(`FrameDataModule`, on-device multi-crop); the runs alternate (dino, dinov2, dino, ...) and each
rate is the median over ``--repeats`` runs, timed after ``--warmup`` steps.

    python bench/bench_dino_recipes.py [--arch vit_micro_p8_64 vit_tiny_d6_p8_112] [--steps 8] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch
from bench_dino_train import make_records  # the same synthetic clips as the DINO training bench


def steps_per_s(recipe: str, arch: str, args: argparse.Namespace) -> float:
    import lightning as L

    from alan.data.frames import FrameDataModule, FrameDataset
    from alan.models.backbones import arch_spec
    from alan.models.dino import DINO, DINOConfig

    spec = arch_spec(arch)
    ds = FrameDataset(make_records(8, 16, spec.img_size), size=spec.img_size)
    mean, std = ds.mean_std()
    cfg = DINOConfig(arch=arch, out_dim=args.out_dim, hidden_dim=args.hidden_dim, bottleneck_dim=args.bottleneck_dim,
                     n_local=args.n_local, recipe=recipe)
    L.seed_everything(0, verbose=False)
    module = DINO(cfg, mean=mean, std=std)
    stamps: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            stamps.append(time.perf_counter())

    trainer = L.Trainer(max_steps=args.steps + args.warmup, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Clock()], use_distributed_sampler=False)
    trainer.fit(module, datamodule=FrameDataModule(ds, args.batch, 0, seed=0))
    return (len(stamps) - args.warmup) / (stamps[-1] - stamps[args.warmup - 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", nargs="+", default=["vit_micro_p8_64", "vit_tiny_d6_p8_112"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8, help="Timed steps per run.")
    ap.add_argument("--warmup", type=int, default=2, help="Untimed steps before them.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-local", type=int, default=4)
    ap.add_argument("--out-dim", type=int, default=1024)
    ap.add_argument("--hidden-dim", type=int, default=512)
    ap.add_argument("--bottleneck-dim", type=int, default=128)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    import lightning  # noqa: F401  (its import sets its loggers' levels; quieten them after it)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    print(f"batch {args.batch}, 2 global + {args.n_local} local crops, head {args.hidden_dim}-{args.bottleneck_dim}-"
          f"{args.out_dim}, {args.steps} timed steps x {args.repeats} runs (median), fp32, "
          f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    for arch in args.arch:
        rates: dict[str, list[float]] = {"dino": [], "dinov2": []}
        for _ in range(args.repeats):
            for recipe in rates:
                rates[recipe].append(steps_per_s(recipe, arch, args))
        base, dense = statistics.median(rates["dino"]), statistics.median(rates["dinov2"])
        print(f"{arch:20s} steps/s  dino {base:6.2f}  dinov2 {dense:6.2f}   samples/s  dino {base * args.batch:6.1f}  "
              f"dinov2 {dense * args.batch:6.1f}   ratio dinov2/dino {dense / base:.2f}")


if __name__ == "__main__":
    main()
