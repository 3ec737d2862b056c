"""STRAPTOR loss, forward + backward: ours vs a straightforward per-pair loop (same numbers);
then RAPTOR epoch times with the token cache on and off.

Shapes from METHODS D: 2 sequences x 16 frames x 785 tokens x 384 channels, K = 64, reference
preset. The reference implementation took 4.0 s on this kind of machine (2 cores, fp32).
The cache part trains a K=32 head on in-memory videos (vit_tiny_p8_112, random init) for a few
epochs with ``cache="memory"`` and ``cache="off"`` and prints per-epoch times and the ratio.

    .venv/bin/python bench/bench_straptor.py [--repeats 5] [--tokens 785] [--cache-epochs 6] [--skip-cache]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from alan.models.raptor import RaptorHead
from alan.models.straptor import PRESETS, Pairs, StraptorConfig, StraptorLoss


def loop_loss(feats: torch.Tensor, logits: torch.Tensor, cfg: StraptorConfig, pairs: Pairs) -> torch.Tensor:
    """The baseline: one N x N feature and code correlation matrix per frame pair, in Python loops."""
    B, T = feats.shape[:2]
    s = logits.softmax(-1) if cfg.activation == "softmax" else logits
    fn = F.normalize(feats.detach(), dim=-1, eps=1e-10)
    sn = F.normalize(s, dim=-1, eps=1e-10)
    kinds = {"self": [((b, t), (b, t)) for b in range(B) for t in range(T)]}
    if cfg.similar == "anchor":
        kinds["similar"] = [((b, int(pairs.anchor[b])), (b, t)) for b in range(B) for t in range(T)]
    else:
        kinds["similar"] = [((b, t), (b, int(pairs.partner_frame[b, t]))) for b in range(B) for t in range(T)]
    if pairs.partner_seq is not None:
        kinds["random"] = [((b, t), (int(pairs.partner_seq[b]), t)) for b in range(B) for t in range(T)]
    total = logits.new_zeros(())
    for kind, plist in kinds.items():
        with torch.no_grad():
            Fs = [fn[a] @ fn[b].T for a, b in plist]
            gmean = torch.stack([Fm.mean() for Fm in Fs]).mean()
        acc = logits.new_zeros(())
        for (a, b), Fm in zip(plist, Fs):
            with torch.no_grad():
                G = Fm - Fm.mean(-1, keepdim=True) if cfg.pointwise else Fm
                if cfg.pointwise and cfg.restore_mean:
                    G = G + gmean
                G = G - cfg.shift(kind)
            S = sn[a] @ sn[b].T
            if cfg.zero_clamp:
                S = S.clamp(min=0)
            acc = acc + (G * S).mean()
        total = total - cfg.weight(kind) * acc / len(plist)
    return total


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=785)
    ap.add_argument("--seqs", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--cache-epochs", type=int, default=6)
    ap.add_argument("--cache-videos", type=int, default=12)
    ap.add_argument("--cache-frames", type=int, default=64)
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument("--skip-loss", action="store_true")
    args = ap.parse_args()
    if not args.skip_loss:
        bench_loss(args)
    if not args.skip_cache:
        bench_cache(args)


def bench_loss(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    B, T, N, D, K = args.seqs, args.frames, args.tokens, args.dim, args.k
    feats = torch.randn(B, T, N, D)
    logits = torch.randn(B, T, N, K, requires_grad=True)
    cfg = PRESETS["reference"]
    loss = StraptorLoss(cfg)
    pairs = loss.draw(B, T, generator=torch.Generator().manual_seed(0))

    def run(fn):
        def go():
            logits.grad = None
            value = fn()
            value.backward()
            return value
        return go

    base = run(lambda: loop_loss(feats, logits, cfg, pairs))
    dense = run(lambda: loss(feats, logits, pairs, dense=True))
    fast = run(lambda: loss(feats, logits, pairs))
    values = {}
    grads = {}
    for name, fn in (("loop", base), ("dense", dense), ("fast", fast)):
        values[name] = fn().item()
        grads[name] = logits.grad.clone()
    for name in ("dense", "fast"):
        ok = abs(values[name] - values["loop"]) <= 1e-4 * abs(values["loop"]) + 1e-7
        gerr = (grads[name] - grads["loop"]).abs().max().item() / grads["loop"].abs().max().item()
        print(f"{name:>5}: loss {values[name]:.7f} vs loop {values['loop']:.7f} ({'same' if ok else 'DIFFERENT'}), "
              f"max rel grad diff {gerr:.1e}")
        if not ok or gerr > 1e-3:
            raise SystemExit("implementations disagree")

    print(f"STRAPTOR loss fwd+bwd, {B} seq x {T} frames x {N} tokens x {D} ch, K={K}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    t_loop = timed(base, args.repeats)
    t_dense = timed(dense, args.repeats)
    t_fast = timed(fast, args.repeats)
    print(f"  per-pair loop (baseline)   {t_loop * 1e3:9.1f} ms")
    print(f"  ours, dense N x N          {t_dense * 1e3:9.1f} ms   x{t_loop / t_dense:.1f} vs loop")
    print(f"  ours, factorised (default) {t_fast * 1e3:9.1f} ms   x{t_loop / t_fast:.1f} vs loop")
    print("  (METHODS D: the reference implementation took 4000 ms for these shapes)")

    head = RaptorHead(D, K)
    x = torch.randn(B * T, N, D)

    def head_step():
        for p in head.parameters():
            p.grad = None
        out = head(x)
        loss(feats, out.reshape(B, T, N, K), pairs).backward()

    t_step = timed(head_step, args.repeats)
    print(f"  head fwd+bwd + our loss    {t_step * 1e3:9.1f} ms   (the whole training step on cached tokens)")


def bench_cache(args: argparse.Namespace) -> None:
    import logging
    import tempfile

    import numpy as np

    from alan.models.backbones import create_backbone
    from alan.models.raptor_module import TokenCache, train_raptor
    from alan.records import Record
    from alan.training import RunOptions

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rng = np.random.default_rng(0)
    n, T = args.cache_videos, args.cache_frames
    vids = [rng.integers(0, 256, (T, 112, 112), dtype=np.uint8) for _ in range(n)]
    records = [Record(f"v{i}", load_frames=(lambda v=v: v), n_frames=T, split="train") for i, v in enumerate(vids)]
    bb = create_backbone("vit_tiny_p8_112")
    nbytes = TokenCache.nbytes_for(n * T, bb.grid ** 2, bb.embed_dim)
    print(f"\nRAPTOR epochs, {n} videos x {T} frames (112 px), vit_tiny_p8_112, K=32, batch 4, "
          f"{args.cache_epochs} epochs; cache size {nbytes / 2**20:.0f} MiB "
          f"({bb.grid ** 2} tokens x {bb.embed_dim} ch x 2 B per frame)")
    times = {}
    for mode in ("off", "memory"):
        with tempfile.TemporaryDirectory() as tmp:
            opts = RunOptions(max_epochs=args.cache_epochs, batch_size=4, progress=False, loggers=(),
                              checkpoint_every_n_steps=None)
            t0 = time.perf_counter()
            head = train_raptor(bb, records, tmp, n_parcels=32, cache=mode, opts=opts)
            times[mode] = (time.perf_counter() - t0, head.config["run_info"]["epoch_s"])
        total, epochs = times[mode]
        print(f"  cache {mode:>6}: total {total:6.1f} s, epochs " + " ".join(f"{e:.1f}" for e in epochs))
    off, mem = times["off"], times["memory"]
    print(f"  total time off/memory: x{off[0] / mem[0]:.1f}; last epoch off/memory: x{off[1][-1] / mem[1][-1]:.1f}")
    echonet = TokenCache.nbytes_for(7465 * 175, 28 * 28, 384)
    print(f"  for scale: EchoNet train (7,465 videos x ~175 frames) with ViT-S/4 tokens would need "
          f"{echonet / 2**30:.0f} GiB; with vit_tiny_p8_112 {TokenCache.nbytes_for(7465 * 175, 196, 192) / 2**30:.0f} GiB")


if __name__ == "__main__":
    main()
