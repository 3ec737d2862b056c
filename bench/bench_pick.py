"""`alan pick`: click-to-mask latency on a 112 px frame, parcels cached vs recomputed per click.

What one click costs the server: find the parcel class under the pixel, toggle it, run the
full `ParcelToSegment.predict` on the shown frame, render the view PNG. Measured in-process and
over HTTP (the real FastAPI app under uvicorn, `POST /api/click` + `GET /api/view/...png`).

Baselines measured in the same run on the same frames: (1) recomputing the shown frame's parcels
(backbone + RAPTOR head) for every click, (2) recomputing the whole recording's parcels for every
click (what the area curve would need without the cache). The area curve itself (predict on
every frame) is fetched after the mask and is reported separately.

Run: OMP_NUM_THREADS=2 .venv/bin/python bench/bench_pick.py [--clicks 30] [--k 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from alan.cli.pick_web import create_app, png, render_view
from alan.data import open_dataset
from alan.phantom import synthesize
from alan.models.backbones import bundled_backbone, load_backbone
from alan.models.raptor import RaptorHead
from alan.pipelines.pick import PathPolicy, PickSession
from alan.pipelines.segment import Parcellator


def median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=12)
    ap.add_argument("--k", type=int, default=64, help="parcels (the paper's K=64)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tmp = Path(tempfile.mkdtemp(prefix="bench_pick_"))
    ds = open_dataset(synthesize("echonet", tmp / "echonet", seed=0, size="small"))
    bb = load_backbone(bundled_backbone())
    torch.manual_seed(0)
    head = RaptorHead(bb.embed_dim, args.k).eval()
    head.hash = "bench"
    parcellator = Parcellator(bb, head)
    session = PickSession(ds.records, parcellator)
    t0 = time.perf_counter()
    opened = session.open(0)
    first_open = time.perf_counter() - t0
    frame = session.records[0].ed or 0
    rng = np.random.default_rng(0)
    pixels = [tuple(int(v) for v in rng.integers(16, 96, 2)) for _ in range(args.clicks)]
    n_frames, size = opened.parcels.shape[0], opened.parcels.shape[1]

    def click_cached(row: int, col: int) -> None:
        session.toggle_at(0, frame, row, col)
        session.mask(0, frame)
        png(render_view(session, 0, frame))

    def click_recompute_frame(row: int, col: int) -> None:
        parcels = parcellator(opened.frames[frame:frame + 1])[0]
        session.toggle(int(parcels[row, col]))
        session.model.predict(parcels)
        png(render_view(session, 0, frame))

    def click_recompute_record(row: int, col: int) -> None:
        parcels = parcellator(opened.frames)
        session.toggle(int(parcels[frame, row, col]))
        session.model.predict(parcels[frame])
        png(render_view(session, 0, frame))

    def measure(fn, n: int | None = None) -> list[float]:
        fn(*pixels[0])  # warm-up
        out = []
        for row, col in pixels[:n]:
            t = time.perf_counter()
            fn(row, col)
            out.append(time.perf_counter() - t)
        return out

    cached = measure(click_cached)
    per_frame = measure(click_recompute_frame)
    per_record = measure(click_recompute_record, 3)
    curve = []
    for row, col in pixels[:3]:
        session.toggle_at(0, frame, row, col)
        t = time.perf_counter()
        session.area_curve(0)
        curve.append(time.perf_counter() - t)

    # the same click over HTTP, through the real app
    import socket

    import uvicorn

    app = create_app(session, policy=PathPolicy(ds.root), out=None)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"

    def click_http(row: int, col: int) -> None:
        body = json.dumps({"record": 0, "frame": frame, "row": row, "col": col}).encode()
        req = urllib.request.Request(base + "/api/click", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "X-Alan-Pick": "1"})
        with urllib.request.urlopen(req) as r:
            version = json.loads(r.read())["version"]
        with urllib.request.urlopen(f"{base}/api/view/0/{frame}.png?v={version}") as r:
            r.read()

    http = measure(click_http)
    server.should_exit = True
    thread.join(timeout=10)

    print(f"alan pick, EchoNet phantom record: {n_frames} frames of {size} px, K={args.k}, bundled backbone "
          f"{bb.config.arch}, torch threads {torch.get_num_threads()}, {args.clicks} clicks (median)")
    print(f"  first open (parcels of the whole recording, once) : {first_open * 1000:8.1f} ms")
    print(f"  click -> mask + view PNG, parcels cached (ours)   : {median_ms(cached):8.1f} ms")
    print(f"  same over HTTP (POST /api/click + GET view PNG)   : {median_ms(http):8.1f} ms")
    print(f"  baseline 1: recompute the frame's parcels / click : {median_ms(per_frame):8.1f} ms  "
          f"-> ours is {statistics.median(per_frame) / statistics.median(cached):.1f}x faster")
    print(f"  baseline 2: recompute the record's parcels / click: {median_ms(per_record):8.1f} ms  (3 clicks) "
          f"-> ours is {statistics.median(per_record) / statistics.median(cached):.1f}x faster")
    print(f"  area curve after a click (predict on all {n_frames} frames): {median_ms(curve):8.1f} ms")


if __name__ == "__main__":
    main()
