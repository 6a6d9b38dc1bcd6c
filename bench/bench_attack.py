"""PGD-K overhead: time of ``attacks.PGD`` with K steps / (K x one forward+backward w.r.t. the input).

One PGD step must cost one eval-mode forward plus one backward to the input; projection, sign and
clipping are elementwise. The ratio therefore measures everything else (mode switches, checks,
random start, copies)::

    ratio = t(PGD-K) / (K * t(forward + input-backward))        target <= 1.15

Both are measured in the same run, on the same model, batch and device (fastest of ``--repeats``
after ``--warmup`` untimed calls). Examples::

    python bench/bench_attack.py                                  # wrn-16-2, batch 32, CPU
    python bench/bench_attack.py --arch wrn-34-10 --batch 256 --device cuda --steps 10
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int, warmup: int) -> float:
    """Fastest wall time of ``fn()`` over ``repeats`` calls, in seconds.

    The minimum, not the median: on a shared machine other jobs only ever add time, so the fastest
    run is the least-disturbed estimate of the work itself.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def input_grad_pass(model, x, y):
    """The unit of work of one attack step: eval forward + backward to the input only."""
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    torch.autograd.grad(loss, x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="wrn-16-2")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from advtrain.models import create_model
    from attacks import PGD

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.arch, dataset="cifar10").to(device).eval()
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    pgd = PGD(eps=8 / 255, alpha=2 / 255, steps=args.steps, loss="ce", init="uniform")
    t_unit = timed(lambda: input_grad_pass(model, x, y), device, args.repeats, args.warmup)
    t_pgd = timed(lambda: pgd(model, x, y), device, args.repeats, args.warmup)
    ratio = t_pgd / (args.steps * t_unit)
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()} "
          f"threads={torch.get_num_threads()} device={device} torch={torch.__version__}")
    print(f"{args.arch} batch {args.batch}: fwd+input-bwd {t_unit * 1e3:.1f} ms, "
          f"PGD-{args.steps} {t_pgd * 1e3:.1f} ms")
    print(f"ratio PGD-K / (K x fwd+input-bwd) = {ratio:.3f}  (target <= 1.15: "
          f"{'ok' if ratio <= 1.15 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
