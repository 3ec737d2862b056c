"""Parcel-to-segment throughput on 112x112 parcel maps with K=64.

Ours (whole-stack labelling + bincount statistics) against two baselines measured in the same
run on the same data: (1) a straightforward per-frame Python loop of the same rules
(per-class skimage/scipy labelling, per-region loops), (2) a per-frame region-adjacency loop
like the reference code (dilate every region, test it against every other region, walk the
graph for enclaves; plain Python instead of networkx). Both baselines' masks are checked to
equal ours. Reference anchors: 82 frames/s identification, 4.8 frames/s inference (with snake).

Then the snake, every post-processing step on: the baseline is predict with
snake_method="skimage" (skimage's active_contour per component, started on the full contour),
ours the default batched snake; frames/s of both and the ratio, DICE against the truth of both,
the per-stage split of our predict, and the ideas measured one by one (all frames at once vs
one snake system per component, a start contour resampled to a fixed number of points,
skipping frames whose mask repeats, the banded factorisation vs skimage's dense inverses).
Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_parcel_to_segment.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict, deque

import numpy as np
from scipy import ndimage
from skimage import morphology
from sklearn.base import clone

from alan.downstream import ParcelToSegment
from alan.downstream import parcel_to_segment as p2s
from alan.downstream import snake as sn
from alan.downstream.parcel_to_segment import snake_mask
from alan.metrics import dice

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
    # the component with the most distinct interior classes (component_by="parcels"), then the largest
    best = max(range(1, n + 1), key=lambda i: (len(np.unique(p[comp == i])), int((comp == i).sum()), -i))
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
    best = max(comps, key=lambda c: (len({cls[u] for u in c}), sum(int(masks[u].sum()) for u in c), -first[id(c)]))
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


# ------------------------------------------------------------------ the snake: baseline vs ours
STAGES = [  # (module, function, stage name) wrapped with a timer for the per-stage split
    (p2s, "_label_regions", "regions (labelling)"),
    (p2s, "_keep_best_component", "best component"),
    (p2s, "_add_enclaves", "enclaves"),
    (p2s, "binary_closing_disk", "closing"),
    (p2s, "gaussian_stack", "snake: Gaussian of the mask"),
    (p2s, "boundary_cycles", "snake: start contours"),
    (sn, "sobel_magnitude", "snake: Sobel energy"),
    (sn, "EdgeSpline", "snake: energy spline"),
    (sn, "_BandSolver", "snake: banded factorisation"),
    (p2s, "fill_polygons", "snake: polygon fill"),
    (p2s, "fill_holes", "fill holes"),
]


def stage_split(model: ParcelToSegment, parcels: np.ndarray, batch: int) -> tuple[dict[str, float], float]:
    """Seconds per stage (and in total) of model.predict on `parcels` in batches of `batch`."""
    acc: dict[str, float] = defaultdict(float)
    saved = []
    for mod, name, label in STAGES + [(p2s, "active_contours", "snake total")]:
        fn = getattr(mod, name)
        saved.append((mod, name, fn))

        def timed(*a, _fn=fn, _label=label, **k):
            t0 = time.perf_counter()
            out = _fn(*a, **k)
            acc[_label] += time.perf_counter() - t0
            return out

        setattr(mod, name, timed)
    try:
        model.predict(parcels[:batch])
        acc.clear()
        t0 = time.perf_counter()
        for i in range(0, len(parcels), batch):
            model.predict(parcels[i : i + batch])
        total = time.perf_counter() - t0
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
    inner = acc["snake: Sobel energy"] + acc["snake: energy spline"] + acc["snake: banded factorisation"]
    acc["snake: iterations"] = acc.pop("snake total") - inner
    return dict(acc), total


def resample(points: np.ndarray, n: int) -> np.ndarray:
    """A closed contour resampled to `n` points evenly spaced along its length."""
    q = np.vstack([points, points[:1]])
    s = np.r_[0, np.cumsum(np.hypot(*np.diff(q, axis=0).T))]
    t = np.linspace(0, s[-1], n, endpoint=False)
    return np.stack([np.interp(t, s, q[:, 0]), np.interp(t, s, q[:, 1])], axis=1)


def cut_bright_per_frame(masks: np.ndarray, frames: np.ndarray, level: float, prior: np.ndarray) -> np.ndarray:
    """The bright cut written frame by frame with scipy (the baseline): label, prior mass per
    piece, dilate the best piece, fill holes."""
    out = masks.copy()
    for i, (mask, frame) in enumerate(zip(masks, frames)):
        pieces, n = ndimage.label(mask & (frame <= level), structure=CROSS)
        if n > 1:
            mass = ndimage.sum(prior, pieces, np.arange(1, n + 1))
            grown = ndimage.binary_dilation(pieces == 1 + int(np.argmax(mass)), structure=CROSS)
            out[i] = ndimage.binary_fill_holes(mask & grown, structure=CROSS)
    return out


def bright_cut_section(pred: np.ndarray, truth: np.ndarray, t_predict: float) -> None:
    """The shipped recipe's extra step (`bright_cut=0.2`) on top of `predict`'s masks, on frames drawn
    from the truth (dark speckled blood, brighter speckled wall): ours (all frames at once) against
    the same rule frame by frame with scipy, and what it costs predict."""
    from alan.downstream.parcel_to_segment import bright_level, cut_bright

    rng = np.random.default_rng(1)
    frames = (np.where(truth, 40.0, 150.0) * rng.rayleigh(0.8, truth.shape)).astype(np.float32)
    level = bright_level(frames, truth, 0.2)
    prior = truth.mean(axis=0)
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(3):
        for name, f in (("ours", cut_bright), ("per frame", cut_bright_per_frame)):
            t0 = time.perf_counter()
            cut = f(pred, frames, level, prior)
            times[name].append(time.perf_counter() - t0)
    t_cut, t_base, n = statistics.median(times["ours"]), statistics.median(times["per frame"]), len(pred)
    same = bool((cut_bright(pred, frames, level, prior) == cut_bright_per_frame(pred, frames, level, prior)).all())
    print(f"\nbright cut (the shipped recipe's last step, {n} frames): ours {1e3 * t_cut / n:.3f} ms/frame, "
          f"baseline per-frame scipy {1e3 * t_base / n:.3f} ms/frame ({t_base / t_cut:.1f}x; masks equal: {same}); "
          f"predict {n / t_predict:.0f} -> {n / (t_predict + t_cut):.0f} frames/s with it; DICE vs truth "
          f"{dice(pred, truth).mean():.4f} -> {dice(cut, truth).mean():.4f}")


def snake_section(model: ParcelToSegment, parcels: np.ndarray, masks: np.ndarray, batch: int) -> None:
    n = len(parcels)
    base = clone(model).set_params(snake=True, snake_method="skimage")
    ours_model = clone(model).set_params(snake=True, snake_method="batched")
    bare = clone(model).set_params(snake=False)
    for m in (base, ours_model, bare):
        m.n_parcels_, m.interior_ = model.n_parcels_, model.interior_
    ref, ours = base.predict(parcels), ours_model.predict(parcels)
    bare.predict(parcels)
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    for _ in range(3):  # interleaved, so that a change of load on a shared machine hits all alike
        for name, m in (("base", base), ("ours", ours_model), ("bare", bare)):
            t0, c0 = time.perf_counter(), time.process_time()
            m.predict(parcels)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    t_base, t_ours, t_nosnake = (statistics.median(wall[k]) for k in ("base", "ours", "bare"))
    c_base, c_ours = statistics.median(cpu["base"]), statistics.median(cpu["ours"])
    d_base, d_ours = dice(ref, masks).mean(), dice(ours, masks).mean()
    bright_cut_section(ours, masks, t_ours)
    print()
    print(f"Snake, every post-processing step on ({n} frames in one predict call; median of 3, interleaved; "
          f"load average {os.getloadavg()[0]:.1f}):")
    print(f"  {'':52s} {'frames/s':>9s} {'(CPU time)':>11s}")
    print(f"  {'baseline: skimage active_contour per component':52s} {n / t_base:9.1f} {n / c_base:11.1f}")
    print(f"  {'ours: batched snake (default)':52s} {n / t_ours:9.1f} {n / c_ours:11.1f}")
    print(f"  ratio ours / baseline: {t_base / t_ours:.1f}x (CPU time {c_base / c_ours:.1f}x); "
          f"without the snake: {n / t_nosnake:.0f} frames/s")
    print(f"  DICE vs truth: baseline {d_base:.4f}, ours {d_ours:.4f} (difference {d_ours - d_base:+.5f}); "
          f"pixels that differ: {int((ours != ref).sum())} of {ref.size}")

    split, total = stage_split(ours_model, parcels, batch)
    print(f"\n  per-stage split of our predict (batches of {batch} frames, {n / total:.0f} frames/s here):")
    for label, sec in sorted(split.items(), key=lambda kv: -kv[1]):
        print(f"    {label:34s} {1e3 * sec / n:7.3f} ms/frame  {100 * sec / total:5.1f} %")
    rest = total - sum(split.values())
    print(f"    {'other (interior lookup, glue)':34s} {1e3 * rest / n:7.3f} ms/frame  {100 * rest / total:5.1f} %")

    # the ideas, one by one, on the closed masks of the same frames
    closed = model.set_params(snake=False, fill=False).predict(parcels)
    model.set_params(snake=True, fill=True)
    smooth = sn.gaussian_stack(closed, model.snake_sigma)
    polys, frames, _ = sn.boundary_cycles(closed)
    kw = dict(alpha=model.snake_alpha, beta=model.snake_beta, gamma=model.snake_gamma, w_edge=model.snake_w_edge,
              max_num_iter=model.snake_max_num_iter)
    full = p2s.fill_holes(sn.fill_polygons(sn.active_contours(smooth, polys, frames, **kw), frames, closed.shape))
    t_all = timeit(lambda: sn.active_contours(smooth, polys, frames, **kw))
    t_each = timeit(lambda: [sn.active_contours(smooth[f : f + 1], [p], [0], **kw) for p, f in zip(polys, frames)],
                    repeat=1)
    lengths = [len(p) for p in polys]
    print(f"\n  ideas, measured on the same {n} frames ({len(polys)} snakes, {np.mean(lengths):.0f} points on average "
          f"on the full contour):")
    print(f"    all snakes of a stack as one system: {1e3 * t_all / n:.3f} ms/frame; one system per snake: "
          f"{1e3 * t_each / n:.3f} ms/frame ({t_each / t_all:.1f}x)")
    sizes = sorted(set(lengths))
    t_inv = timeit(lambda: [np.linalg.inv(np.eye(m) * 2.0 + np.eye(m, k=1)) for m in lengths], repeat=1)
    t_band = timeit(lambda: sn._BandSolver(np.asarray(lengths), model.snake_alpha, model.snake_beta, model.snake_gamma))
    print(f"    skimage's dense n x n inverse per snake: {1e3 * t_inv / n:.3f} ms/frame; one banded Cholesky of "
          f"all snakes: {1e3 * t_band / n:.3f} ms/frame ({len(sizes)} distinct point counts; a cache per count "
          f"would save at most the latter)")
    for pts in (64, 128, 160):
        init = [resample(p, pts) for p in polys]
        t_r = timeit(lambda: sn.active_contours(smooth, init, frames, **kw))
        m_r = p2s.fill_holes(sn.fill_polygons(sn.active_contours(smooth, init, frames, **kw), frames, closed.shape))
        print(f"    start resampled to {pts:3d} points: snake {1e3 * t_r / n:.3f} ms/frame (full contour "
              f"{1e3 * t_all / n:.3f}); DICE vs truth {dice(m_r, masks).mean() - dice(full, masks).mean():+.4f}, "
              f"DICE vs the full-contour masks {dice(m_r, full).mean():.4f}")
    packed = np.packbits(closed.reshape(n, -1), axis=1)
    repeats = n - len(np.unique(packed, axis=0))
    t_pack = timeit(lambda: np.unique(np.packbits(closed.reshape(n, -1), axis=1), axis=0, return_inverse=True))
    print(f"    skipping frames whose closed mask repeats an earlier one: {repeats} of {n} frames repeat here; "
          f"finding them costs {1e3 * t_pack / n:.3f} ms/frame")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=512, help="frames for our fit/predict")
    ap.add_argument("--loop-frames", type=int, default=32, help="frames for the per-frame loop baseline")
    ap.add_argument("--graph-frames", type=int, default=4, help="frames for the region-graph baseline")
    ap.add_argument("--snake-frames", type=int, default=240, help="frames for the snake baseline vs ours")
    ap.add_argument("--batch", type=int, default=48, help="frames per predict call in the per-stage split")
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
    print(f"snake (batched): {snake_ms:.2f} ms/frame of the {1e3 / fps['pred_snake']:.2f} ms/frame total "
          f"(the loop and graph baselines use skimage's active_contour per component)")
    print(f"vs the reference anchors: identification {fps['fit'] / REF_FIT_FPS:.0f}x "
          f"({REF_FIT_FPS} frames/s), inference with snake {fps['pred_snake'] / REF_PREDICT_FPS:.0f}x "
          f"({REF_PREDICT_FPS} frames/s), without snake {fps['pred'] / REF_PREDICT_FPS:.0f}x")

    ns = min(args.snake_frames, n)
    snake_section(model, parcels[:ns], masks[:ns], args.batch)


if __name__ == "__main__":
    main()
