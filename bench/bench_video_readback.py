"""Cost of the checked video write: `alan.data._util.write_video` (write, then decode the file back
and compare its frame count and size) against the same OpenCV write without the read-back.

Videos the size of the EchoNet phantom's default preset (112 x 112, 48-64 frames: 56 here, lossless FFV1);
both variants run in this process, interleaved, median of the repeats.
Run: .venv/bin/python bench/bench_video_readback.py [--videos 20 --frames 56 --size 112 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from alan.data._util import write_video


def plain_write(path: Path, frames: np.ndarray, fps: float) -> None:
    T, H, W = frames.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (W, H))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--frames", type=int, default=56)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    # smooth moving content compresses like an echo phantom, unlike white noise
    yy, xx = np.mgrid[: args.size, : args.size]
    videos = [np.stack([(127 + 120 * np.sin((xx + 3 * t + i) / 9.0) * np.cos(yy / 11.0)).astype(np.uint8)
                        + rng.integers(0, 8, (args.size, args.size), dtype=np.uint8) for t in range(args.frames)])
              for i in range(args.videos)]
    times: dict[str, list[float]] = {"plain OpenCV write (baseline)": [], "checked write_video": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name in times:
                t0 = time.perf_counter()
                for i, v in enumerate(videos):
                    path = Path(tmp) / f"{r}_{i}_{len(name)}.avi"
                    (plain_write if name.startswith("plain") else write_video)(path, v, 50.0)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["plain OpenCV write (baseline)"])
    print(f"{args.videos} videos of {args.frames} x {args.size} x {args.size}, median of {args.repeats}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:32s} {m:7.3f} s  {m / base:5.2f} x baseline  ({1000 * m / args.videos:.1f} ms per video)")


if __name__ == "__main__":
    main()
