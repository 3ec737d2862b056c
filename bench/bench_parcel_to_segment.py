"""Parcel-to-segment throughput on 112x112 parcel maps with K=64 (METHODS D).

Ours (whole-stack labelling + bincount statistics) against two baselines measured in the same
run on the same data: (1) a straightforward per-frame Python loop of the same rules
(per-class skimage/scipy labelling, per-region loops), (2) a per-frame region-adjacency loop
like the reference code (dilate every region, test it against every other region, walk the
graph for enclaves; plain Python instead of networkx). Both baselines' masks are checked to
equal ours. Reference anchors from METHODS D: 82 frames/s identification, 4.8 frames/s
inference (with snake). Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_parcel_to_segment.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import deque

import numpy as np
from scipy import ndimage
from skimage import measure, morphology

from alan.downstream import ParcelToSegment
from alan.downstream.parcel_to_segment import snake_mask

K, SIZE = 64, 112
CROSS = ndimage.generate_binary_structure(2, 1)
REF_FIT_FPS, REF_PREDICT_FPS = 82.0, 4.8


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blobby random parcel maps (argmax of upsampled low-res scores) where 6 classes prefer
    the inside of a per-frame ellipse (the "LV"), plus those ellipse masks."""
    rng = np.random.default_rng(seed)
    low = 7  # ~150 regions and ~55 classes per frame, the load at which the reference ran 4.8 frames/s
    yy, xx = np.mgrid[:SIZE, :SIZE]
    masks = np.empty((n, SIZE, SIZE), bool)
    scores = rng.normal(size=(n, K, low, low)).astype(np.float32)
    for i in range(n):
        cy, cx = rng.uniform(45, 67, 2)
        ry, rx = rng.uniform(22, 32), rng.uniform(14, 20)
        masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    inside_low = ndimage.zoom(masks.astype(np.float32), (1, low / SIZE, low / SIZE), order=1)
    scores[:, :6] += 2.5 * inside_low[:, None]
    parcels = ndimage.zoom(scores, (1, 1, SIZE / low, SIZE / low), order=1).argmax(1)
    return parcels, masks


def timeit(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------ baseline 1: per-frame loops
def regions_of(p: np.ndarray) -> np.ndarray:
    regions = np.zeros(p.shape, np.int64)
    nxt = 0
    for c in np.unique(p):
        lab, n = ndimage.label(p == c, structure=CROSS)
        regions[lab > 0] = lab[lab > 0] + nxt
        nxt += n
    return regions


def loop_fit(parcels, masks, overlap=0.75, hit=0.5, presence=0.3):
    present = np.zeros(K, int)
    over = np.zeros(K, int)
    for p, m in zip(parcels, masks):
        for c in np.unique(p):
            present[c] += 1
            lab, n = ndimage.label(p == c, structure=CROSS)
            over[c] += any(m[lab == r].mean() >= overlap for r in range(1, n + 1))
    return (present > 0) & (over >= hit * present) & (present >= presence * len(parcels))


def loop_predict_frame(p, interior, cutoff=8, radius=10, snake=False):
    regions = regions_of(p)
    mask = np.isin(p, interior)
    if not mask.any():
        return mask
    comp, n = ndimage.label(mask, structure=CROSS)
    best = max(range(1, n + 1), key=lambda i: (len(np.unique(regions[comp == i])), int((comp == i).sum()), -i))
    mask = comp == best
    bg, n = ndimage.label(~mask, structure=CROSS)
    edge = set(np.unique(np.r_[bg[0], bg[-1], bg[:, 0], bg[:, -1]]).tolist())
    for i in range(1, n + 1):
        if i not in edge and len(np.unique(regions[bg == i])) <= cutoff:
            mask |= bg == i
    disk = morphology.disk(radius)
    mask = ndimage.binary_erosion(ndimage.binary_dilation(mask, disk), disk, border_value=1)
    if snake:
        smooth = ndimage.gaussian_filter(mask.astype(np.float32), 3.0, mode="nearest")
        mask = snake_mask(mask, smooth, alpha=0.01, beta=0.2, gamma=0.01, w_edge=1.0, max_num_iter=10)
    return ndimage.binary_fill_holes(mask)


# ------------------------------------------------------------------ baseline 2: region adjacency graph
def graph_predict_frame(p, interior, cutoff=8, radius=10, snake=False):
    """Like the reference: region adjacency by dilating every region and testing every other."""
    regions = regions_of(p)
    n_reg = int(regions.max())
    masks = [regions == r for r in range(1, n_reg + 1)]
    neighbours = [set() for _ in range(n_reg)]
    cross = morphology.disk(1)
    for i in range(n_reg):
        grown = ndimage.binary_dilation(masks[i], cross)
        for j in range(n_reg):
            if j != i and np.any(grown & masks[j]):
                neighbours[i].add(j)
    cls = [int(p[m][0]) for m in masks]
    is_int = [c in set(interior) for c in cls]
    # components of interior regions, by BFS over the graph
    seen, comps = set(), []
    for s in range(n_reg):
        if is_int[s] and s not in seen:
            comp, todo = [], deque([s])
            seen.add(s)
            while todo:
                u = todo.popleft()
                comp.append(u)
                for v in neighbours[u]:
                    if is_int[v] and v not in seen:
                        seen.add(v)
                        todo.append(v)
            comps.append(comp)
    if not comps:
        return np.zeros(p.shape, bool)
    first = {id(c): min(np.flatnonzero(np.logical_or.reduce([masks[u] for u in c]).ravel())) for c in comps}
    best = max(comps, key=lambda c: (len(c), sum(int(masks[u].sum()) for u in c), -first[id(c)]))
    chosen = set(best)
    # enclaves: groups of the remaining regions, by BFS, bordered only by chosen regions and not the edge
    seen = set(chosen)
    add = []
    for s in range(n_reg):
        if s in seen:
            continue
        group, todo, ok = [], deque([s]), True
        seen.add(s)
        while todo:
            u = todo.popleft()
            group.append(u)
            m = masks[u]
            if m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
                ok = False
            for v in neighbours[u]:
                if v not in seen:
                    seen.add(v)
                    todo.append(v)
        if ok and len(group) <= cutoff:
            add += group
    mask = np.logical_or.reduce([masks[u] for u in list(chosen) + add])
    disk = morphology.disk(radius)
    mask = ndimage.binary_erosion(ndimage.binary_dilation(mask, disk), disk, border_value=1)
    if snake:
        smooth = ndimage.gaussian_filter(mask.astype(np.float32), 3.0, mode="nearest")
        mask = snake_mask(mask, smooth, alpha=0.01, beta=0.2, gamma=0.01, w_edge=1.0, max_num_iter=10)
    return ndimage.binary_fill_holes(mask)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=512, help="frames for our fit/predict")
    ap.add_argument("--loop-frames", type=int, default=32, help="frames for the per-frame loop baseline")
    ap.add_argument("--graph-frames", type=int, default=4, help="frames for the region-graph baseline")
    args = ap.parse_args()

    parcels, masks = make_data(args.frames)
    model = ParcelToSegment(n_parcels=K).fit(parcels, masks)
    interior = model.interior_parcels_
    regions_per_frame = np.mean([regions_of(p).max() for p in parcels[:8]])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings on a shared machine vary)")
    print(f"data: {args.frames} frames {SIZE}x{SIZE}, K={K}, ~{regions_per_frame:.0f} regions/frame, "
          f"interior parcels {interior}")

    # correctness: baselines give the same masks and interior set
    lp, lm = parcels[: args.loop_frames], masks[: args.loop_frames]
    ours_ns = model.set_params(snake=False).predict(lp)
    agree_loop = all(np.array_equal(ours_ns[i], loop_predict_frame(lp[i], interior)) for i in range(len(lp)))
    gp = parcels[: args.graph_frames]
    agree_graph = all(np.array_equal(ours_ns[i], graph_predict_frame(gp[i], interior)) for i in range(len(gp)))
    agree_fit = np.array_equal(loop_fit(lp, lm), ParcelToSegment(n_parcels=K).fit(lp, lm).interior_)
    print(f"agreement with baselines: fit {agree_fit}, predict loop {agree_loop}, predict graph {agree_graph}")

    n = args.frames
    t_fit = timeit(lambda: ParcelToSegment(n_parcels=K).fit(parcels, masks))
    t_fit_loop = timeit(lambda: loop_fit(lp, lm))
    t_pred = timeit(lambda: model.set_params(snake=False).predict(parcels))
    n_snake = min(n, 128)
    t_pred_snake = timeit(lambda: model.set_params(snake=True).predict(parcels[:n_snake]))
    t_loop = timeit(lambda: [loop_predict_frame(p, interior) for p in lp])
    t_loop_snake = timeit(lambda: [loop_predict_frame(p, interior, snake=True) for p in lp])
    t_graph = timeit(lambda: [graph_predict_frame(p, interior) for p in gp])
    t_graph_snake = timeit(lambda: [graph_predict_frame(p, interior, snake=True) for p in gp])

    fps = {
        "fit": n / t_fit,
        "fit_loop": len(lp) / t_fit_loop,
        "pred": n / t_pred,
        "pred_snake": n_snake / t_pred_snake,
        "loop": len(lp) / t_loop,
        "loop_snake": len(lp) / t_loop_snake,
        "graph": len(gp) / t_graph,
        "graph_snake": len(gp) / t_graph_snake,
    }
    snake_ms = 1e3 * (1 / fps["pred_snake"] - 1 / fps["pred"])
    print()
    print(f"{'frames/s (median of 3)':44s} {'ours':>9s} {'loop':>9s} {'graph':>9s} {'ours/loop':>10s} {'ours/graph':>11s}")
    print(f"{'identification (fit)':44s} {fps['fit']:9.1f} {fps['fit_loop']:9.1f} {'-':>9s} "
          f"{fps['fit'] / fps['fit_loop']:9.1f}x {'-':>11s}")
    print(f"{'inference, no snake':44s} {fps['pred']:9.1f} {fps['loop']:9.1f} {fps['graph']:9.2f} "
          f"{fps['pred'] / fps['loop']:9.1f}x {fps['pred'] / fps['graph']:10.0f}x")
    print(f"{'inference, with snake':44s} {fps['pred_snake']:9.1f} {fps['loop_snake']:9.1f} {fps['graph_snake']:9.2f} "
          f"{fps['pred_snake'] / fps['loop_snake']:9.1f}x {fps['pred_snake'] / fps['graph_snake']:10.0f}x")
    print(f"snake (skimage active_contour, per frame): {snake_ms:.1f} ms/frame of the "
          f"{1e3 / fps['pred_snake']:.1f} ms/frame total")
    print(f"vs METHODS D reference anchors: identification {fps['fit'] / REF_FIT_FPS:.0f}x "
          f"({REF_FIT_FPS} frames/s), inference with snake {fps['pred_snake'] / REF_PREDICT_FPS:.0f}x "
          f"({REF_PREDICT_FPS} frames/s), without snake {fps['pred'] / REF_PREDICT_FPS:.0f}x")


if __name__ == "__main__":
    main()
