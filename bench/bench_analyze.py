"""`alan analyze` throughput (frames/s) vs the backbone-only forward on the same frames.

Ours: `analyze_study` end to end on a folder of phantom echo videos (decode, parcels, masks,
ED/ES, EF, NIfTI labels, H.264 overlay, area plot, summary, study table and report). Baseline:
the backbone's forward alone (``Backbone(frames)``) on the same frames, already decoded and
resized, in full batches of ``--batch`` frames (the backbone's batch speed), measured in the same
run. The ratio says how much of analyze's time is the network the analysis cannot avoid, and how
much is everything else. Medians of interleaved repeats; then the per-stage split of the median
analyze run: wall seconds in the thread that ran the stage and CPU seconds (ffmpeg's own CPU
counted in the H.264 encode), against the CPU the backbone alone needs for the same frames.

    python bench/bench_analyze.py [--arch vit_tiny_p8_112] [--videos 4] [--frames 0] [--repeats 3]
                                  [--batch 32] [--device cpu] [--input-size 224] [--k 32]

``--frames 0`` keeps the phantom's own lengths (36-44 frames, the small EchoNet phantom);
``--frames 200`` is an EchoNet-size recording. ``--input-size 224 --k 32`` is the shipped head's
setting (frames to the backbone at 224 px, a 28 x 28 token grid): the baseline forward then runs
at 224 px too, as analyze's own pass does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from alan.data._util import write_video
from alan.downstream.parcel_to_segment import ParcelToSegment
from alan.models.backbones import create_backbone
from alan.models.parcellator import Parcellator
from alan.models.raptor import RaptorHead
from alan.phantom.echo import echo_sequence
from alan.pipelines.analyze import analyze_study, study_inputs
from alan.transforms.intensity import to_unit
from alan.transforms.spatial import resize_unit, to_work

#: Stages in pipeline order, with the thread that runs them.
THREADS = {"decode": "decode", "waiting for decode": "main", "backbone + head": "main", "parcels": "writer",
           "masks": "writer", "summary": "writer", "nifti": "writer", "overlay draw": "writer",
           "overlay encode (H.264)": "writer", "plot": "writer", "summary json": "writer",
           "waiting for the writer": "main"}


def cpu_now() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def videos(folder: Path, n: int, frames: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        length = frames or int(rng.integers(36, 45))
        seq = echo_sequence("A4C", rng, n_frames=length, size=(112, 112), fps=50.0)
        write_video(folder / f"video{i:02d}.avi", seq.frames, 50.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="vit_tiny_p8_112")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=0, help="frames per video (0: 36-44, the small phantom's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--input-size", type=int, default=None, help="px the frames go to the backbone at (default: its own)")
    ap.add_argument("--k", type=int, default=8, help="parcels of the (random) head")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-analyze-"))
    videos(tmp / "videos", args.videos, args.frames)
    torch.manual_seed(0)
    bb = create_backbone(args.arch).to(args.device).eval()
    head = RaptorHead(bb.embed_dim, args.k, input_size=args.input_size).to(args.device).eval()
    size = args.input_size or bb.config.img_size
    parcellator = Parcellator(bb, head, work_size=112, batch_size=args.batch)
    maps = np.zeros((2, 112, 112), np.int64)
    maps[:, 30:80, 30:80] = 1
    lv = ParcelToSegment(n_parcels=args.k).fit(maps, maps == 1, provenance={"backbone_hash": None, "head_hash": None})
    items = study_inputs(tmp / "videos")
    work = np.concatenate([to_work(list(np.asarray(r.frames)), 112) for r in items])
    n_frames = len(work)

    def backbone_only() -> None:
        with torch.no_grad():
            for s in range(0, n_frames, args.batch):
                batch = work[s:s + args.batch]
                bb(batch) if args.input_size is None else bb(resize_unit(to_unit(batch), size), size)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def analyze(i: int):
        return analyze_study(items, parcellator, {"LV": lv}, tmp / f"out{i}", progress=False)

    backbone_only()  # warm-ups: first calls pay one-off imports (matplotlib, nibabel, ffmpeg) and allocations
    analyze(-1)
    base, ours, base_cpu, runs = [], [], [], []
    for i in range(args.repeats):
        t, c = time.perf_counter(), cpu_now()
        backbone_only()
        base.append(time.perf_counter() - t)
        base_cpu.append(cpu_now() - c)
        t, c = time.perf_counter(), cpu_now()
        res = analyze(i)
        runs.append((time.perf_counter() - t, cpu_now() - c, res.timings.as_dict()))
        ours.append(runs[-1][0])
    b, o = statistics.median(base), statistics.median(ours)
    wall, cpu, stages = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    lengths = sorted({int(r.n_frames) for r in items})
    print(f"{args.arch} at {size} px, K={args.k}, on {args.device}, {len(items)} videos of {lengths[0]}-{lengths[-1]} frames, {n_frames} frames, "
          f"batch {args.batch}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    print(f"backbone forward only : {n_frames / b:8.1f} frames/s   (baseline: full batches of {args.batch} frames)")
    print(f"alan analyze (all)    : {n_frames / o:8.1f} frames/s")
    print(f"ratio analyze / backbone-only throughput: {b / o:.2f}")
    print(f"\nper-stage split of the median analyze run ({wall:.2f} s wall, {cpu:.2f} CPU-s of the process and ffmpeg; "
          f"the backbone alone: {statistics.median(base):.2f} s wall, {statistics.median(base_cpu):.2f} CPU-s)")
    print(f"{'stage':24s} {'thread':7s} {'wall s':>7s} {'CPU s':>7s} {'CPU ms/frame':>13s}")
    for name in [*THREADS, *sorted(set(stages) - set(THREADS))]:
        if name in stages:
            s = stages[name]
            print(f"{name:24s} {THREADS.get(name, '?'):7s} {s['wall_s']:7.3f} {s['cpu_s']:7.3f} "
                  f"{1000 * s['cpu_s'] / n_frames:13.2f}")
    print("(backbone + head: CPU of the calling thread only; torch's other intra-op threads are in the process total)")


if __name__ == "__main__":
    main()
