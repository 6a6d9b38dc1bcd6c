"""Images per CPU-second of the real training loader against a plain batched crop+flip (same arrays).

The real loader is ``advtrain.data.build_train_loader`` (``augment: basic``, device CPU): ``workers``
reader threads gather uint8 batches, crop + flip + scaling run batched in the main process (on the GPU
in a CUDA run). The plain version is what one would write by hand over the same uint8 arrays: a random
permutation, one fancy-index read per batch, zero padding, a crop per image picked from ``unfold``
windows, a flip, ``/255``. CPU time counts the whole main process, reader threads included
(``time.process_time``), and the loader's worker processes if it has any (``/proc/PID/stat``).
The two are timed interleaved, per (workers, batch), after one warm-up epoch (worker start-up
excluded); the median over ``--repeats`` is printed with the ratio plain/loader per CPU-second
(target: at most 1.25). Linux only (``/proc``). Example::

    python bench/bench_loader.py --images 12800 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from advtrain.data import build_train_loader, set_loader_epoch  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _cpu(worker_pids) -> float:
    return time.process_time() + sum(_proc_cpu(p) for p in worker_pids)


def plain_epoch(images: np.ndarray, batch: int, gen: torch.Generator) -> int:
    """One epoch of the hand-written batched crop+flip; returns the number of images."""
    n = len(images)
    perm = torch.randperm(n, generator=gen).numpy()
    for lo in range(0, n, batch):
        x = torch.from_numpy(images[perm[lo:lo + batch]]).permute(0, 3, 1, 2).contiguous()  # NCHW
        b = len(x)
        windows = F.pad(x, (4, 4, 4, 4)).unfold(2, 32, 1).unfold(3, 32, 1)  # B×3×9×9×32×32 views
        top, left = torch.randint(0, 9, (2, b), generator=gen)
        out = windows[torch.arange(b), :, top, left]
        flip = torch.rand(b, generator=gen) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out).float().div_(255.0)
    return n


def loader_epoch(loader, epoch: int) -> int:
    set_loader_epoch(loader, epoch)
    return sum(len(y) for _, y in loader)


def measure(fn) -> tuple:
    pids = fn.pids()
    c0, t0 = _cpu(pids), time.perf_counter()
    n = fn()
    return n / (_cpu(pids) - c0), n / (time.perf_counter() - t0)


class _Loader:
    def __init__(self, path, batch, workers):
        self.loader = build_train_loader("cifar10", train_npz=path, batch_size=batch, workers=workers,
                                         augment="basic", seed=0)
        self.epoch = 0
        self()  # warm-up: starts the persistent workers

    def pids(self):
        procs = self.loader.processes  # worker processes (autoaugment); reader threads count in-process
        it = procs._iterator if procs is not None else None
        return [w.pid for w in it._workers] if it is not None and hasattr(it, "_workers") else []

    def __call__(self):
        self.epoch += 1
        return loader_epoch(self.loader, self.epoch)


class _Plain:
    def __init__(self, images, batch):
        self.images, self.batch, self.gen = images, batch, torch.Generator().manual_seed(0)

    def pids(self):
        return []

    def __call__(self):
        return plain_epoch(self.images, self.batch, self.gen)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=12800)
    p.add_argument("--workers", default="0,2")
    p.add_argument("--batches", default="128,512")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # one thread per process, as in DataLoader workers: CPU-seconds compare
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "train.npz")
        np.savez(path, image=rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8),
                 label=rng.integers(0, 10, args.images))
        from advtrain.data import read_npz

        images = read_npz(path)[0]  # the same memory-mapped arrays the loader reads
        print(f"torch={torch.__version__} images={args.images} cpus={os.cpu_count()} repeats={args.repeats} "
              f"load average={'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
        print(f"{'workers':>7} {'batch':>5} | {'loader img/CPU-s':>16} {'plain img/CPU-s':>15} "
              f"{'ratio':>5} | {'loader img/s':>12} {'plain img/s':>11}")
        for workers in (int(w) for w in args.workers.split(",")):
            for batch in (int(b) for b in args.batches.split(",")):
                loader, plain = _Loader(path, batch, workers), _Plain(images, batch)
                rows = [(measure(plain), measure(loader)) for _ in range(args.repeats)]  # interleaved
                pc, lc = (statistics.median(r[k][0] for r in rows) for k in (0, 1))
                pw, lw = (statistics.median(r[k][1] for r in rows) for k in (0, 1))
                print(f"{workers:>7} {batch:>5} | {lc:>16.0f} {pc:>15.0f} {pc / lc:>5.2f} | "
                      f"{lw:>12.0f} {pw:>11.0f}")
                del loader
    print(f"load average at the end={'/'.join(f'{v:.1f}' for v in os.getloadavg())} (1/5/15 min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
