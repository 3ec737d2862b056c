"""The frozen-encoder linear layer of the SSCL grid: hand-written Adam against torch.optim.Adam.

`EDESClassifier.fit_features` trains one linear layer (softmax cross-entropy, Adam with
weight decay, early stopping) thousands of times in the grid's cross-validation. Measured here
on the grid's shapes (tiny preset: ~100 training slices, ED+ES features of 2 x 128 dims, three
classes, batch 16, 300 epochs without early stopping), each in the same process and run:

    hand-written    the classifier's closed-form gradient + Adam update (no autograd), 1 thread
    torch (1 thr)   nn.Linear + F.cross_entropy + torch.optim.Adam(weight_decay), 1 thread
    torch (default) the same with torch's default thread count (the baseline)

Both produce the same weights (checked, up to float32 rounding). Prints seconds per fit and
ratios against the baseline.
Run: .venv/bin/python bench/bench_classifier.py [--n 100 --dim 256 --epochs 300 --repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from alan.downstream.classifier import _adam_loop


def torch_adam(z, t, wb, tr, *, lr, batch_size, weight_decay, epochs, seed):
    layer = torch.nn.Linear(z.shape[1], wb.shape[0])
    with torch.no_grad():
        layer.weight.copy_(wb[:, :-1])
        layer.bias.copy_(wb[:, -1])
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    tr_t = torch.from_numpy(tr)
    for _ in range(epochs):
        perm = tr_t[torch.randperm(len(tr_t), generator=g)]
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(layer(z[idx]), t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.standard_normal((a.n, a.dim)).astype(np.float32))
    t = torch.from_numpy(rng.integers(0, a.classes, a.n)).long()
    wb0 = torch.from_numpy(0.01 * rng.standard_normal((a.classes, a.dim + 1)).astype(np.float32))
    tr, va = np.arange(a.n), np.zeros(0, np.int64)
    kw = dict(lr=1e-2, batch_size=a.batch_size, weight_decay=1e-4)
    default_threads = torch.get_num_threads()

    def hand():
        torch.set_num_threads(1)
        return _adam_loop(z, t, a.classes, wb0, tr, va, max_epochs=a.epochs, patience=a.epochs, seed=0,
                          eval_fn=None, **kw)[0]

    def torch1():
        torch.set_num_threads(1)
        return torch_adam(z, t, wb0, tr, epochs=a.epochs, seed=0, **kw)

    def torch_default():
        torch.set_num_threads(default_threads)
        return torch_adam(z, t, wb0, tr, epochs=a.epochs, seed=0, **kw)

    times, weights = {}, {}
    for name, fn in (("torch (default threads)", torch_default), ("torch (1 thread)", torch1),
                     ("hand-written (1 thread)", hand)):
        runs = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            weights[name] = fn()
            runs.append(time.perf_counter() - t0)
        times[name] = min(runs)
    torch.set_num_threads(default_threads)
    diff = float((weights["hand-written (1 thread)"] - weights["torch (1 thread)"]).abs().max())
    base = times["torch (default threads)"]
    print(f"{a.n} samples x {a.dim} features, {a.classes} classes, batch {a.batch_size}, {a.epochs} epochs "
          f"({default_threads} default threads); best of {a.repeats}")
    for name, s in times.items():
        print(f"  {name:26s} {s:7.3f} s per fit   {base / s:5.1f}x the baseline (torch, default threads)")
    print(f"  max |weight difference| hand-written vs torch: {diff:.2e}")


if __name__ == "__main__":
    main()
