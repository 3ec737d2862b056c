"""Feature extraction frames/s of a loaded backbone artifact vs a bare timm forward_features.

Ours: ``load_backbone(dir)(uint8 frames)`` = prepare (uint8 -> float, resize, gray -> 3 channels,
standardise) + ``forward_features`` + the CLS/patch split. Baseline: the same timm model with the
same weights, ``forward_features`` on an already prepared float batch, in the same run. Target:
ours within 10 % of the baseline. Interleaved repeats, medians.

    python bench/bench_features.py [--arch vit_tiny_p8_112] [--batch 16] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import timm
import torch

from alan.models.backbones import ARCHS, create_backbone, load_backbone, save_backbone


def timed(fn, n: int = 1) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", nargs="+", default=["vit_micro_p8_64", "vit_tiny_p8_112"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, default=None, help="Input frame size (uint8, gray; default: the arch's, "
                                                            "so prepare does not resize).")
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch}, uint8 gray frames")
    for arch in args.arch:
        spec = ARCHS[arch]
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as d:
            save_backbone(create_backbone(arch, mean=[0.2] * 3, std=[0.25] * 3), d)
            bb = load_backbone(d)
        bare = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **spec.timm_kwargs()).eval()
        bare.load_state_dict(bb.vit.state_dict())
        size = args.size or spec.img_size
        frames = torch.randint(0, 256, (args.batch, size, size), dtype=torch.uint8)
        prepared = bb.prepare(frames)
        with torch.inference_mode():
            ours_fn = lambda: bb(frames)  # noqa: E731
            bare_fn = lambda: bare.forward_features(prepared)  # noqa: E731
            torch.testing.assert_close(ours_fn()[1], bare_fn()[:, 1:])
            for _ in range(2):
                ours_fn(), bare_fn()
            ours, base = [], []
            for _ in range(args.repeats):
                ours.append(timed(ours_fn))
                base.append(timed(bare_fn))
        o, b = statistics.median(ours), statistics.median(base)
        print(f"{arch:18s} {size}px  ours {args.batch / o:8.1f} frames/s   bare timm {args.batch / b:8.1f} frames/s   "
              f"ratio ours/bare {b / o:.3f}  (prepare alone {args.batch / timed(lambda: bb.prepare(frames), 5):.0f} frames/s)")


if __name__ == "__main__":
    main()
