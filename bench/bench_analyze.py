"""`alan analyze` throughput (frames/s) vs the backbone-only forward on the same frames.

Ours: `analyze_study` end to end on a folder of phantom EchoNet videos (decode, parcels, masks,
ED/ES, EF, NIfTI labels, H.264 overlay, area plot, summary, study table and report). Baseline:
the backbone's forward alone (``Backbone(frames)``, the same batches of the same frames already
decoded and resized), measured in the same run. The ratio says how much of analyze's time is the
network the analysis cannot avoid, and how much is everything else. Medians of interleaved repeats.

    python bench/bench_analyze.py [--arch vit_tiny_p8_112] [--videos 4] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from alan.phantom import synthesize
from alan.downstream.parcel_to_segment import ParcelToSegment
from alan.models.backbones import create_backbone
from alan.models.raptor import RaptorHead
from alan.pipelines.analyze import analyze_study, study_inputs
from alan.pipelines.segment import Parcellator, to_work


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="vit_tiny_p8_112")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-analyze-"))
    data = synthesize("echonet", tmp / "echonet", seed=0, size="small")
    videos = sorted((data / "Videos").glob("*.avi"))[: args.videos]
    folder = tmp / "videos"
    folder.mkdir()
    for v in videos:
        (folder / v.name).symlink_to(v)
    torch.manual_seed(0)
    bb = create_backbone(args.arch).to(args.device).eval()
    head = RaptorHead(bb.embed_dim, 8).to(args.device).eval()
    parcellator = Parcellator(bb, head, work_size=112, batch_size=args.batch)
    maps = np.zeros((2, 112, 112), np.int64)
    maps[:, 30:80, 30:80] = 1
    lv = ParcelToSegment(n_parcels=8).fit(maps, maps == 1, provenance={"backbone_hash": None, "head_hash": None})
    items = study_inputs(folder)
    frames = [to_work(list(np.asarray(r.frames)), 112) for r in items]
    n_frames = sum(len(f) for f in frames)

    def backbone_only() -> None:
        with torch.no_grad():
            for f in frames:
                for s in range(0, len(f), args.batch):
                    bb(f[s:s + args.batch])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def analyze(i: int) -> None:
        analyze_study(items, parcellator, {"LV": lv}, tmp / f"out{i}", progress=False)

    backbone_only()  # warm-ups: first calls pay one-off imports (matplotlib, nibabel, ffmpeg) and allocations
    analyze(-1)
    base, ours = [], []
    for i in range(args.repeats):
        t = time.perf_counter()
        backbone_only()
        base.append(time.perf_counter() - t)
        t = time.perf_counter()
        analyze(i)
        ours.append(time.perf_counter() - t)
    b, o = statistics.median(base), statistics.median(ours)
    print(f"{args.arch} on {args.device}, {len(items)} videos, {n_frames} frames, torch threads {torch.get_num_threads()}")
    print(f"backbone forward only : {n_frames / b:8.1f} frames/s")
    print(f"alan analyze (all)    : {n_frames / o:8.1f} frames/s")
    print(f"ratio analyze / backbone-only throughput: {b / o:.2f}")


if __name__ == "__main__":
    main()
