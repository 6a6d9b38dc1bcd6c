"""Benchmark: O(B·C) ``gkl_loss`` vs a naive pairwise (B×C×C) implementation, forward+backward.

Prints one row per class count: median wall time of each implementation, the speed-up
``pairwise-time / our-time`` (of the medians, and of the minima, which is steadier on a loaded
machine) and the relative difference of the two loss values (a sanity check
that both compute the same thing). The naive version is processed in sample chunks when C is large
so that its B×C×C intermediates stay around 1 GB; the arithmetic is the same. For C >= 1000 the
naive side runs at most 3 repeats and no warm-up (each run takes seconds).

    python bench/bench_losses.py                      # B=256, C in {10, 100, 1000}, CPU, 1 thread
    python bench/bench_losses.py --device cuda --classes 100 1000 --repeats 10
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from advtrain.losses import gkl_loss


def naive_gkl(a, n, u, alpha=1.0, beta=1.0, gamma=1.0, chunk=None):
    """The reference formula with explicit (B, C, C) tensors (as the DKL repository computes it)."""
    w = u.detach() ** gamma
    chunk = chunk or a.shape[0]
    numerator = 0.0
    for i in range(0, a.shape[0], chunk):
        ai, ni, wi = a[i:i + chunk], n[i:i + chunk], w[i:i + chunk]
        dn = ni[:, :, None] - ni[:, None, :]
        da = ai[:, :, None] - ai[:, None, :]
        pairs = wi[:, :, None] * wi[:, None, :]
        numerator = numerator + (pairs * (dn - da) ** 2).sum()
    wmse = 0.25 * numerator / w.sum(1).square().sum()
    soft_ce = -(F.softmax(n.detach(), 1) * F.log_softmax(a, 1)).sum(1).mean()
    return beta * wmse + alpha * soft_ce


def time_fwd_bwd(fn, a, n, u, repeats, device, warmup=True):
    """(median, min) seconds of forward+backward over ``repeats`` runs, and the loss value."""
    times, value = [], None
    for k in range(int(not warmup), repeats + 1):
        a.grad = n.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = fn(a, n, u)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k:
            times.append(time.perf_counter() - start)
        value = loss.item()
    return (statistics.median(times), min(times)), value


def bench_one(batch, classes, repeats, device, chunk_elems):
    gen = torch.Generator().manual_seed(classes)
    a = (3 * torch.randn(batch, classes, generator=gen)).to(device).requires_grad_()
    n = (3 * torch.randn(batch, classes, generator=gen)).to(device).requires_grad_()
    u = F.softmax(torch.randn(batch, classes, generator=gen), 1).to(device)
    chunk = max(1, min(batch, chunk_elems // (classes * classes)))
    kw = dict(alpha=4.0, beta=20.0, gamma=0.5)
    big = classes >= 1000  # the naive run takes seconds: no warm-up, few repeats
    t_naive, v_naive = time_fwd_bwd(lambda *x: naive_gkl(*x, chunk=chunk, **kw), a, n, u,
                                    min(repeats, 3) if big else repeats, device, not big)
    t_ours, v_ours = time_fwd_bwd(lambda *x: gkl_loss(*x, **kw), a, n, u, repeats, device)
    return dict(C=classes, naive_ms=1e3 * t_naive[0], ours_ms=1e3 * t_ours[0],
                speedup=t_naive[0] / t_ours[0], speedup_min=t_naive[1] / t_ours[1],
                rel_diff=abs(v_naive - v_ours) / abs(v_naive), chunk=chunk)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: steadier on a shared machine; 0: torch default)")
    parser.add_argument("--chunk-elems", type=int, default=2 ** 25,
                        help="max B·C·C elements per naive chunk (2^25 floats = 128 MiB)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"gkl_loss forward+backward, B={args.batch}, device={device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"{'C':>6} {'pairwise ms':>12} {'ours ms':>9} {'speed-up':>9} {'(of mins)':>9} "
          f"{'rel diff':>9} {'chunk':>6}")
    for c in args.classes:
        r = bench_one(args.batch, c, args.repeats, device, args.chunk_elems)
        print(f"{r['C']:>6} {r['naive_ms']:>12.2f} {r['ours_ms']:>9.3f} {r['speedup']:>8.1f}x "
              f"{r['speedup_min']:>8.1f}x {r['rel_diff']:>9.1e} {r['chunk']:>6}")


if __name__ == "__main__":
    main()
