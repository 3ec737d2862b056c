"""`alan analyze` peak memory vs study size: bounded (streamed), or growing with the videos?

Ours: `analyze_study` end to end (as bench_analyze.py: decode, parcels, masks, ED/ES, EF, NIfTI
labels, H.264 overlay, area plot, summary, study table and report) on folders of N phantom echo
videos, N = ``--videos``, plus the 6-video ``alan synth echonet --size small`` dataset listed
through its EchoNet reader. Each run is a subprocess of its own, so its peak RSS (ru_maxrss) is
its own (ffmpeg, the overlay encoder, one process per record, is not in it). Baseline, measured
in the same run: a subprocess with the same imports and models that decodes ONE video and runs
the backbone + head on it, the fixed cost no study avoids. Printed: peak RSS per N, peak minus
baseline, the slope in MiB per extra video between the smallest and largest N, the ratio of those
two peaks, and an extrapolation (not a measurement) to 10,000 videos: baseline + slope x 10,000.
Also the listing step alone (`study_inputs` on the largest folder, seconds and RSS), which runs
before any record.

Peak RSS varies by about +-15 MiB from one run to the next (threads meeting in their peaks, malloc
arenas), so between 8 and 128 videos the RSS slope resolves only ~0.2 MiB per video. Finer checks:
the RSS sampled every 0.1 s inside each run (at a quarter of the run, at its end, and when in the
run it was highest: a leak peaks at the end); the size of report.html (it links each record's
overlay and area plot rather than embedding them, so it grows by one table row and two links per
record); and, in two more subprocesses (smallest and largest N, about twice as slow), the peak of
the Python + NumPy heap under tracemalloc (started after the models are loaded; torch's own
tensors are not in it).

    python bench/bench_analyze_memory.py [--videos 8 32 128] [--frames 0] [--arch vit_micro_p8_64]
                                         [--batch 32] [--k 8] [--no-echonet]

``--frames 0`` keeps the phantom's own lengths (36-44 frames); ``--frames 200`` is an
EchoNet-size recording (112 px). Runs on the CPU; one thread per process is the intended setting
(``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alan.downstream.parcel_to_segment import ParcelToSegment
from alan.models.backbones import create_backbone
from alan.models.parcellator import Parcellator
from alan.models.raptor import RaptorHead
from alan.pipelines.analyze import analyze_study, study_inputs
from alan.transforms.spatial import to_work
from bench_analyze import videos

EXTRAPOLATE_TO = 10_000


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mib() -> float:
    """The current RSS (Linux), else the peak so far."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_mib()


def models(args: argparse.Namespace) -> tuple[Parcellator, dict[str, ParcelToSegment]]:
    """A random backbone + RaptorHead and an LV ParcelToSegment, as bench_analyze.py builds them."""
    torch.manual_seed(0)
    bb = create_backbone(args.arch).eval()
    head = RaptorHead(bb.embed_dim, args.k).eval()
    maps = np.zeros((2, 112, 112), np.int64)
    maps[:, 30:80, 30:80] = 1
    lv = ParcelToSegment(n_parcels=args.k).fit(maps, maps == 1, provenance={"backbone_hash": None, "head_hash": None})
    return Parcellator(bb, head, work_size=112, batch_size=args.batch), {"LV": lv}


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this (fresh) process: "analyze", "baseline" or "list" on ``args.path``."""
    if args.child == "list":
        before, t = rss_mib(), time.perf_counter()
        items = study_inputs(args.path)
        return {"wall_s": time.perf_counter() - t, "records": len(items), "rss_before_mib": before, "peak_mib": peak_mib()}
    parcellator, segmenters = models(args)
    if args.heap:
        tracemalloc.start()
    t = time.perf_counter()
    items = study_inputs(args.path)
    if args.child == "baseline":
        with torch.no_grad():
            parcellator(to_work(list(np.asarray(items[0].frames)), parcellator.work_size))
        frames = int(items[0].n_frames)
        trace: list[float] = []
    else:
        trace, stop = [], threading.Event()

        def sample() -> None:  # the RSS every 0.1 s while the study runs
            while not stop.wait(0.1):
                trace.append(rss_mib())

        sampler = threading.Thread(target=sample)
        sampler.start()
        res = analyze_study(items, parcellator, segmenters, args.out, progress=False)
        stop.set()
        sampler.join()
        assert all(r["status"] == "ok" for r in res.rows), res.failed
        frames = sum(int(r["frames"]) for r in res.rows)
    return {"wall_s": time.perf_counter() - t, "records": len(items), "frames": frames, "peak_mib": peak_mib(),
            "rss_quarter_mib": trace[len(trace) // 4] if trace else None, "rss_end_mib": trace[-1] if trace else None,
            "max_at": int(np.argmax(trace)) / max(1, len(trace) - 1) if trace else None,
            "heap_peak_mib": tracemalloc.get_traced_memory()[1] / 2**20 if args.heap else None,
            "report_mib": (args.out / "report.html").stat().st_size / 2**20 if args.child == "analyze" else None}


def measure(args: argparse.Namespace, kind: str, path: Path, out: Path | None = None, heap: bool = False
            ) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--path", str(path), "--out", str(out or ""),
           "--arch", args.arch, "--batch", str(args.batch), "--k", str(args.k), *(["--heap"] if heap else [])]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def subset(src: Path, dst: Path, n: int) -> Path:
    """A folder of the first `n` videos of `src` (hard links where the file system allows)."""
    dst.mkdir()
    for f in sorted(src.iterdir())[:n]:
        try:
            os.link(f, dst / f.name)
        except OSError:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--frames", type=int, default=0, help="frames per video (0: 36-44, the small phantom's)")
    ap.add_argument("--arch", default="vit_micro_p8_64")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--k", type=int, default=8, help="parcels of the (random) head")
    ap.add_argument("--no-echonet", action="store_true", help="skip the EchoNet-format dataset run")
    ap.add_argument("--child", choices=["analyze", "baseline", "list"], help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--heap", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    ns = sorted(set(args.videos))
    with tempfile.TemporaryDirectory(prefix="bench-analyze-memory-") as d:
        report(args, ns, Path(d))


def report(args: argparse.Namespace, ns: list[int], tmp: Path) -> None:
    """Write the folders under `tmp`, measure each in a subprocess, print the table."""
    t = time.perf_counter()
    videos(tmp / "all", ns[-1], args.frames)
    folders = {n: subset(tmp / "all", tmp / f"n{n}", n) for n in ns}
    made = f"{ns[-1]} videos written in {time.perf_counter() - t:.0f} s"
    base = measure(args, "baseline", subset(tmp / "all", tmp / "one", 1))
    runs = {n: measure(args, "analyze", folders[n], tmp / f"out{n}") for n in ns}
    if not args.no_echonet:
        from alan.phantom.write import write_echonet

        (tmp / "echonet").mkdir()
        write_echonet(tmp / "echonet", 0, "small")
        runs["echonet"] = measure(args, "analyze", tmp / "echonet", tmp / "out-echonet")
    listing = measure(args, "list", folders[ns[-1]])
    heap = {n: measure(args, "analyze", folders[n], tmp / f"heap{n}", heap=True)["heap_peak_mib"] for n in (ns[0], ns[-1])}

    print(f"{args.arch}, K={args.k}, batch {args.batch}, CPU, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs; {made}; one subprocess per row")
    print(f"baseline (same imports + models, decode + backbone + head on ONE video of {base['frames']} frames): "
          f"peak RSS {base['peak_mib']:.0f} MiB")
    print(f"{'videos':>8s} {'frames':>7s} {'wall s':>7s} {'peak RSS MiB':>13s} {'- baseline':>11s} {'RSS 1/4 -> end':>15s} "
          f"{'max at':>7s} {'heap peak MiB':>14s} {'report MiB':>11s}")
    for n, r in runs.items():
        h = f"{heap[n]:14.2f}" if n in heap else f"{'-':>14s}"
        print(f"{n:>8} {r['frames']:7d} {r['wall_s']:7.1f} {r['peak_mib']:13.1f} {r['peak_mib'] - base['peak_mib']:11.1f} "
              f"{r['rss_quarter_mib']:7.0f} -> {r['rss_end_mib']:4.0f} {r['max_at']:7.0%} {h} {r['report_mib']:11.2f}")
    lo, hi = runs[ns[0]], runs[ns[-1]]
    if len(ns) < 2:
        return
    slope = (hi["peak_mib"] - lo["peak_mib"]) / (ns[-1] - ns[0])
    print(f"slope between {ns[0]} and {ns[-1]} videos: {slope:+.3f} MiB per extra video "
          f"({1024 * slope / ((hi['frames'] - lo['frames']) / (ns[-1] - ns[0])):+.1f} KiB per frame); "
          f"peak ratio {ns[-1]} / {ns[0]} videos: {hi['peak_mib'] / lo['peak_mib']:.3f}")
    h = (heap[ns[-1]] - heap[ns[0]]) / (ns[-1] - ns[0])
    print(f"heap (tracemalloc: Python + NumPy, not torch) slope: {1024 * h:+.1f} KiB per extra video; "
          f"report.html: {1024 * (hi['report_mib'] - lo['report_mib']) / (ns[-1] - ns[0]):+.1f} KiB per extra video")
    print(f"EXTRAPOLATION (not measured) to {EXTRAPOLATE_TO:,} videos: baseline + slope x {EXTRAPOLATE_TO:,} = "
          f"{base['peak_mib'] + slope * EXTRAPOLATE_TO:.0f} MiB")
    print(f"listing alone (study_inputs on the {ns[-1]}-video folder): {listing['wall_s']:.2f} s "
          f"({1000 * listing['wall_s'] / ns[-1]:.1f} ms per file), RSS {listing['rss_before_mib']:.0f} -> "
          f"peak {listing['peak_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
