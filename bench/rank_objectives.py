"""Rank training regimes under one budget: clean, PGD-20 and AutoAttack accuracy, with paired tests.

Regimes: PGD-AT, TRADES, IKL-AT, GKL-AT (the ``executed`` PGD schedule) and the regimes of
bench/bench_regimes.py: the single-step / clean ones of configs/ (``clean``, ``fgsm_rs``,
``n_fgsm``, ``grad_align``), PGD-AT and TRADES with K = 10 fixed steps of 2/255 (``pgd_at10``,
``trades10``) and APGD-CE 2 steps (``apgd2``); see REGIMES.

Every objective is trained by the real trainer (``advtrain.fit``) with the same model, images, seed,
epochs, optimiser (SGD, lr ``--lr`` cosine over the run's own epochs) and, for the four of
OBJECTIVES, training attack (the
``executed`` schedule: K=5 steps of eps_t/2, eps ramp); only ``objective:`` differs, and it takes
the objective's own CIFAR-10 defaults (TRADES beta 6; IKL-AT / GKL-AT alpha 4, beta 20, prior T 4).
A regime of REGIMES replaces the objective and attack sections with its own (the rest is shared). Each final model is then evaluated with
``advtrain.evaluate`` on one fixed random test subset (seeded, drawn as ``advtrain eval --subset
random`` draws it, since ``test.npz`` is sorted by class):

    clean      accuracy on the clean images
    PGD-20     the project's PGD (attacks.PGD, CE, random start, step 2.5*eps/20)
    AA         the official AutoAttack (pyautoattack through attacks.AutoAttackAdapter),
               version custom = APGD-CE then APGD-T, 100 iterations each; with "custom",
               pyautoattack keeps its constructor settings: APGD-CE with 5 restarts (the
               standard version uses 1) and APGD-T with 9 target classes, 1 restart

Each figure k/n comes with a Wilson 95% interval (float64)::

    p = k/n, z = 1.959964;  centre = (p + z^2/2n) / (1 + z^2/n)
    half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)

Every image's correctness (clean, PGD, AA) is kept, and every two regimes are compared on the same
images with the exact McNemar test on the discordant pairs (b = images only the first gets right,
c = only the second)::

    p = min(1, 2 * sum_{i=0}^{min(b,c)} C(b+c, i) / 2^(b+c))      (two-sided; p = 1 when b+c = 0)

computed with ``math.comb`` in integers and one float division (``mcnemar_exact``). ``table.md``
lists the tests between neighbours (consecutive rows in the table's ``--order``: as given, by
training cost or by AA accuracy), then between every two regimes.

The training cost is the CPU time (user + system, ``getrusage``) of the process while it trains one
regime: comparable between runs with the same ``--threads`` even when processes share the machine,
unlike the wall seconds, which are also reported.

Outputs under ``--out``: ``runs/<objective>/`` (the training runs), ``results.json`` (with every
image's correctness), ``table.md``, ``rank_objectives.png``/``.svg`` (accuracy bars) and
``rank_cost.png``/``.svg`` (robust accuracy against training CPU seconds), when matplotlib is
installed. This is evidence, not a test: nothing is
asserted. The default budget (wrn-10-1, the model of configs/cpu/tiny_pgd_at.yaml; 2048 images, 3
epochs, batch 64) is estimated at about 30 minutes on 2 idle cores, two thirds of it AutoAttack; see
docs/BENCHMARKS.md for how. Examples::

    python bench/rank_objectives.py --threads 2                       # the default budget
    python bench/rank_objectives.py --epochs 1 --train-images 256 --n-test 50   # smoke run
    python bench/rank_objectives.py --from-results a/results.json,b/results.json --out merged
    python bench/rank_objectives.py --objectives clean,fgsm_rs,n_fgsm,grad_align,pgd_at10,trades10 \
        --epochs 2 --train-images 4096 --n-test 1000 --threads 1 --order cost   # the regimes

Runs are seeded and each objective's run starts from the same seed, so one budget may be split over
processes (``--objectives``) and merged afterwards with ``--from-results`` (each regime from one
file; with ``--objectives``, only those regimes are taken from the files).

``--epochs-for REGIME=N,...`` trains the named regimes for N epochs instead of ``--epochs`` (their
cosine schedule spans their own N), e.g. to compare regimes at about equal training CPU seconds
instead of equal steps. Every row records the epochs it trained (``results.json``: ``epochs``;
``table.md`` shows an ``epochs`` column when they differ), and runs with different epochs merge::

    python bench/rank_objectives.py --objectives clean,fgsm_rs --epochs-for clean=16,fgsm_rs=8 \
        --train-images 4096 --n-test 1000 --threads 1 --order cost --out bench/out/eq_a
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import torch

OBJECTIVES = ("pgd_at", "trades", "ikl_at", "gkl_at")
#: regimes beyond the PGD-trained objectives, ``name -> (objective section, attack section)``: the
#: recipes of bench/bench_regimes.py (their one owner; the single-step and clean ones are the
#: objective and attack of configs/<name>_cifar10.yaml, which tests/cli/test_bench_rank.py checks),
#: among them PGD-AT and TRADES with K = 10 fixed steps of 2/255 (``pgd_at10``, ``trades10``)
from bench_regimes import REGIMES  # noqa: E402  (bench/ is on sys.path: the script's folder)

CHOICES = OBJECTIVES + tuple(REGIMES)
LABELS = {"pgd_at": "PGD-AT", "trades": "TRADES", "ikl_at": "IKL-AT", "gkl_at": "GKL-AT",
          "clean": "clean", "fgsm_rs": "FGSM-RS", "n_fgsm": "N-FGSM", "grad_align": "GradAlign",
          "apgd2": "APGD-CE 2", "pgd_at10": "PGD-AT (K=10)", "trades10": "TRADES (K=10)"}
#: the six regimes of the one-budget regime ranking (docs/BENCHMARKS.md)
REGIME_SET = ("clean", "fgsm_rs", "n_fgsm", "grad_align", "pgd_at10", "trades10")
DATA = os.path.join("..", "shared", "data", "cifar10-jpeg")
Z95 = 1.959963984540054  # Phi^-1(0.975)


def wilson(k: int, n: int, z: float = Z95) -> tuple:
    """Wilson score interval (low, high) of a binomial proportion k/n, in float64."""
    if n <= 0:
        return (0.0, 1.0)
    p, n, z2 = k / n, float(n), z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends (no rounding residue)
    high = 1.0 if k == n else min(1.0, centre + half)
    return (low, high)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of ``b`` vs ``c`` discordant pairs (binomial(b+c, 1/2))."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def ordered(results: dict, by: str) -> dict:
    """``results`` in the order of the table: ``given`` (as run or merged), ``cost`` (training CPU
    seconds, cheapest first) or ``aa`` (AutoAttack accuracy, highest first); ties keep the given
    order."""
    keys = {"given": lambda o: 0, "cost": lambda o: results[o]["train_cpu_seconds"],
            "aa": lambda o: -results[o]["aa"]["correct"]}
    if by not in keys:
        raise SystemExit(f"error: --order {by!r}: choose from {', '.join(keys)}")
    return {o: results[o] for o in sorted(results, key=keys[by])}  # sorted() is stable


def neighbours(names) -> list:
    """The pairs of consecutive rows of the table: ``[(n0, n1), (n1, n2), ...]``."""
    names = list(names)
    return list(zip(names, names[1:]))


def all_pairs(names) -> list:
    """Every two regimes, in table order: ``(n_i, n_j)`` for i < j."""
    names = list(names)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def paired(results: dict, pairs=None) -> list:
    """Two regimes on the same images, for each of ``pairs`` (default: every two, in the order of
    ``results``): for clean, PGD and AA, ``b`` (only the first right), ``c`` (only the second
    right), the accuracy difference and the exact McNemar p-value."""
    rows = []
    for a, other in (all_pairs(results) if pairs is None else pairs):
        row = {"a": a, "b": other}
        for key in ("clean", "pgd", "aa"):
            ca, cb = results[a][key]["per_image"], results[other][key]["per_image"]
            if len(ca) != len(cb):
                raise SystemExit(f"error: {a} and {other} were evaluated on different images")
            only_a = sum(1 for u, v in zip(ca, cb) if u and not v)
            only_b = sum(1 for u, v in zip(ca, cb) if v and not u)
            row[key] = {"only_first": only_a, "only_second": only_b,
                        "diff": (only_a - only_b) / len(ca), "p": mcnemar_exact(only_a, only_b)}
        rows.append(row)
    return rows


def paired_table(results: dict, args, pairs=None) -> str:
    lines = [f"| first | second | clean diff (b/c, p) | PGD-{args.pgd_steps} diff (b/c, p) | AA diff (b/c, p) |",
             "|---|---|---|---|---|"]
    for row in paired(results, pairs):
        cells = [f"{100 * row[k]['diff']:+.1f} ({row[k]['only_first']}/{row[k]['only_second']}, "
                 f"p={row[k]['p']:.3g})" for k in ("clean", "pgd", "aa")]
        lines.append(f"| {LABELS[row['a']]} | {LABELS[row['b']]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pair_tables(results: dict, args) -> str:
    """The paired tests as ``table.md`` shows them: neighbours in table order, then every two."""
    if len(results) < 2 or not all("per_image" in r["clean"] for r in results.values()):
        return ""
    return (f"\n\nPaired differences between neighbours (table order: {args.order}; exact McNemar "
            "on the discordant pairs, b = only the first right, c = only the second):\n\n"
            + paired_table(results, args, neighbours(results))
            + "\n\nPaired differences between every two:\n\n" + paired_table(results, args))


def parse_epochs_for(text: str, objectives, epochs: int) -> dict:
    """The epochs of every regime of ``objectives``: ``--epochs-for REGIME=N,...`` (N a positive
    integer, each regime one of ``objectives`` at most once), ``epochs`` for the others. A
    ``ValueError`` names the bad item and the fix."""
    given = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name:
            raise ValueError(f"--epochs-for {item.strip()!r}: write REGIME=N, e.g. fgsm_rs=8")
        if name not in objectives:
            raise ValueError(f"--epochs-for {name!r} is not one of --objectives "
                             f"({', '.join(objectives)}); train it with --objectives or drop it")
        if name in given:
            raise ValueError(f"--epochs-for names {name!r} twice; give each regime once")
        if not (value.isascii() and value.isdigit() and int(value) >= 1):
            raise ValueError(f"--epochs-for {name}={value!r}: the epochs must be a positive integer")
        given[name] = int(value)
    if epochs < 1:
        raise ValueError(f"--epochs {epochs}: the epochs must be a positive integer")
    return {o: given.get(o, epochs) for o in objectives}


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def config(objective: str, args, run_dir: str) -> dict:
    """The training config: everything but ``objective`` (and, for the regimes of REGIMES, the
    attack; with ``--epochs-for``, the epochs) is shared by the runs."""
    cfg = {
        "run": {"name": f"rank_{objective}", "seed": args.seed, "device": "cpu",
                "out_dir": os.path.dirname(run_dir), "progress": False},
        "data": {"dataset": "cifar10", "train_npz": os.path.join(args.data, "train.npz"),
                 "test_npz": os.path.join(args.data, "test.npz"), "batch_size": args.batch_size,
                 "train_subset": args.train_images, "test_subset": 0, "augment": "basic"},
        "model": {"arch": f"wrn-{args.depth}-{args.width}"},
        "objective": {"name": objective},
        "attack": {"eps": "8/255", "schedule": "executed"},
        "optim": {"lr": args.lr, "schedule": "cosine", "epochs": args.epochs_for[objective]},
        "awp": {"enabled": False},
        "ema": {"enabled": False},
    }
    if objective in REGIMES:
        cfg["objective"], cfg["attack"] = (dict(section) for section in REGIMES[objective])
    return cfg


def test_subset(args):
    """A fixed random ``--n-test`` images of test.npz (same rule as ``advtrain eval --subset random``)."""
    from advtrain.data import load_test_arrays

    x, y = load_test_arrays("cifar10", npz=os.path.join(args.data, "test.npz"))
    if not 1 <= args.n_test <= len(y):
        raise SystemExit(f"error: --n-test {args.n_test} must be in 1..{len(y)}")
    gen = torch.Generator().manual_seed(args.subset_seed)
    idx = torch.randperm(len(y), generator=gen)[:args.n_test].sort().values
    return x[idx].contiguous(), y[idx].contiguous()


def train(objective: str, args) -> tuple:
    from advtrain import fit
    from advtrain.train.checkpoint import last_path
    from advtrain.hub.loader import load_model_file

    run_dir = os.path.join(args.out, "runs", objective)
    t0 = time.time()
    fit(config(objective, args, run_dir), run_dir=run_dir, force=True)
    seconds = time.time() - t0
    model = load_model_file(last_path(run_dir), dataset="cifar10", device="cpu").model
    return model, seconds


def evaluate(model, x, y, args) -> dict:
    from advtrain.eval.evaluator import evaluate as aa_evaluate

    from advtrain.eval.accuracy import correct
    from advtrain.eval.evaluator import make_pgd

    t0 = time.time()
    r = aa_evaluate(model, x, y, eps="8/255", version="custom", attacks=["apgd-ce", "apgd-t"],
                    batch_size=args.eval_batch, seed=args.seed, device="cpu", pgd_steps=None,
                    sanity=False, progress=False, return_adv=True)
    model.eval()
    per_image = {"clean": correct(model, x, y, batch_size=args.eval_batch),
                 "aa": r.y_adv.to(y.device) == y}
    with torch.random.fork_rng():  # the evaluator's PGD, per image (seeded as the evaluation)
        torch.manual_seed(args.seed)
        per_image["pgd"] = correct(model, x, y, batch_size=args.eval_batch,
                                   attack=make_pgd(8 / 255, args.pgd_steps, "Linf"))
    n = len(y)
    out = {"n": n, "seconds": time.time() - t0, "flags": list(r["flags"]),
           "per_attack": r["per_attack"]}
    for key, hits in per_image.items():
        hits = hits.cpu().bool()
        k = int(hits.sum())
        out[key] = {"correct": k, "acc": k / n, "ci95": wilson(k, n),
                    "per_image": [int(v) for v in hits.tolist()]}
    if out["aa"]["correct"] != int(round(r.robust_acc * n)):
        raise SystemExit("error: AutoAttack's per-image outcome disagrees with its accuracy")
    return out


def fmt(cell: dict) -> str:
    lo, hi = cell["ci95"]
    return f"{100 * cell['acc']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def epochs_differ(results: dict) -> bool:
    """Whether the regimes of ``results`` trained for different numbers of epochs."""
    return len({r["epochs"] for r in results.values()}) > 1


def epochs_text(results: dict) -> str:
    """``"3 epochs"``, or ``"2-16 epochs"`` when the regimes trained for different numbers."""
    counts = sorted({r["epochs"] for r in results.values()})
    return f"{counts[0]} epochs" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} epochs"


def table(results: dict, args) -> str:
    """One row per regime in the order of ``results``: the epochs it trained (a column only when they
    differ between rows), training CPU seconds (user + system time of the training process,
    ``cpu_seconds``), clean / PGD / AA accuracy with Wilson intervals, wall seconds of training and
    of the evaluation (its CPU seconds in parentheses)."""
    ep = epochs_differ(results)
    lines = [f"| regime |{' epochs |' if ep else ''} train CPU s | clean | PGD-{args.pgd_steps} | "
             "AA (APGD-CE + APGD-T) | train wall s | eval wall s (CPU s) |",
             "|---|" + ("---|" if ep else "") + "---|---|---|---|---|---|"]
    for obj, r in results.items():
        epochs = f" {r['epochs']} |" if ep else ""
        lines.append(f"| {LABELS[obj]} |{epochs} {r['train_cpu_seconds']:.0f} | {fmt(r['clean'])} | "
                     f"{fmt(r['pgd'])} | {fmt(r['aa'])} | {r['train_seconds']:.0f} | {r['seconds']:.0f} "
                     f"({r['eval_cpu_seconds']:.0f}) |")
    return "\n".join(lines)


def bar_figure(results: dict, args):
    """Clean, PGD and AA accuracy per regime, bars with Wilson 95% intervals."""
    from advtrain.utils import new_figure

    keys = (("clean", "clean"), ("pgd", f"PGD-{args.pgd_steps}"), ("aa", "AA"))
    fig = new_figure(figsize=(7, 4))
    ax = fig.add_subplot()
    width = 0.8 / len(keys)
    for j, (key, label) in enumerate(keys):
        xs = [i + (j - 1) * width for i in range(len(results))]
        acc = [100 * r[key]["acc"] for r in results.values()]
        err = [[100 * (r[key]["acc"] - r[key]["ci95"][0]) for r in results.values()],
               [100 * (r[key]["ci95"][1] - r[key]["acc"]) for r in results.values()]]
        ax.bar(xs, acc, width, yerr=err, capsize=3, label=label)
    ax.set_xticks(range(len(results)), [LABELS[o] for o in results], fontsize=7)
    ax.set_ylabel(f"accuracy % (n={args.n_test}, Wilson 95%)")
    ax.set_title(f"wrn-{args.depth}-{args.width}, {args.train_images} images, {epochs_text(results)}")
    ax.legend()
    fig.tight_layout()
    return fig


def cost_figure(results: dict, args):
    """AutoAttack (and PGD) accuracy against training CPU seconds, one labelled point per regime,
    with Wilson 95% intervals; log-scaled cost axis."""
    from advtrain.utils import new_figure

    fig = new_figure(figsize=(6, 4))
    ax = fig.add_subplot()
    cost = [r["train_cpu_seconds"] for r in results.values()]
    for key, label, style in (("pgd", f"PGD-{args.pgd_steps}", dict(marker="o", mfc="none")),
                              ("aa", "AA (APGD-CE + APGD-T)", dict(marker="s"))):
        acc = [100 * r[key]["acc"] for r in results.values()]
        err = [[100 * (r[key]["acc"] - r[key]["ci95"][0]) for r in results.values()],
               [100 * (r[key]["ci95"][1] - r[key]["acc"]) for r in results.values()]]
        ax.errorbar(cost, acc, yerr=err, linestyle="none", capsize=3, label=label, **style)
    ep, last = epochs_differ(results), None
    for obj, r in sorted(results.items(), key=lambda item: item[1]["train_cpu_seconds"]):
        label = f"{LABELS[obj]}, {r['epochs']} ep" if ep else LABELS[obj]
        c = r["train_cpu_seconds"]
        near = last is not None and c <= 1.05 * last  # within 5% of the last point: label above it
        ax.annotate(label, (c, 100 * r["aa"]["acc"]), fontsize=7, xytext=(4, 4 if near else -10),
                    textcoords="offset points")
        last = None if near else c
    ax.margins(y=0.1)
    if min(cost) > 0:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ticks = []  # at the regimes' costs, but none within 5% of the last (labels would overlap)
        for c in sorted(cost):
            if not ticks or c > 1.05 * ticks[-1]:
                ticks.append(c)
        ax.set_xticks(ticks, [f"{c:.0f}" for c in ticks], fontsize=7)
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training CPU seconds (one process, 1 thread)")
    ax.set_ylabel(f"robust accuracy % (n={args.n_test}, Wilson 95%)")
    ax.set_title(f"wrn-{args.depth}-{args.width}, {args.train_images} images x {epochs_text(results)}, "
                 "eps 8/255", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot(results: dict, args) -> list:
    """``rank_objectives.{png,svg}`` (accuracy bars) and ``rank_cost.{png,svg}`` (robust accuracy
    against training CPU seconds) under ``--out``, written as one output; the paths written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("note: matplotlib is not installed; no figures (pip install matplotlib for them)")
        return []
    from advtrain.io.atomic import commit_files
    from advtrain.utils import FIGURE_FORMATS, figure_bytes

    files = {}
    for stem, make in (("rank_objectives", bar_figure), ("rank_cost", cost_figure)):
        fig = make(results, args)
        for ext in FIGURE_FORMATS:
            files[os.path.join(args.out, f"{stem}.{ext}")] = figure_bytes(fig, ext)
    commit_files(files, primary=next(iter(files)))
    return list(files)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objectives", help=f"comma-separated, from {', '.join(CHOICES)} (default: "
                   f"{','.join(OBJECTIVES)}; with --from-results: the regimes to take from the files, "
                   "default all)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--epochs-for", metavar="REGIME=N[,REGIME=N...]",
                   help="train these regimes for N epochs instead of --epochs (each its own cosine "
                        "schedule), e.g. to compare them at about equal training CPU seconds")
    p.add_argument("--train-images", type=int, default=2048)
    p.add_argument("--depth", type=int, default=10, help="WRN depth (wrn-DEPTH-WIDTH)")
    p.add_argument("--width", type=int, default=1, help="WRN widening factor")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--pgd-steps", type=int, default=20)
    p.add_argument("--eval-batch", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--data", default=DATA, help="folder with train.npz and test.npz")
    p.add_argument("--out", default=os.path.join("bench", "out"))
    p.add_argument("--order", default="given", choices=("given", "cost", "aa"),
                   help="row order of the table and of the neighbour tests: as given, by training "
                        "CPU seconds (cheapest first) or by AutoAttack accuracy (highest first)")
    p.add_argument("--from-results", metavar="JSON[,JSON...]",
                   help="train nothing: merge these results.json files (runs of the same budget "
                        "split over processes) into --out's table and PNG")
    args = p.parse_args(argv)
    objectives = [o.strip() for o in (args.objectives or "").split(",") if o.strip()]
    bad = [o for o in objectives if o not in CHOICES]
    if bad:
        print(f"error: unknown objective {bad[0]!r}; choose from {', '.join(CHOICES)}",
              file=sys.stderr)
        return 2
    if args.from_results:
        if args.epochs_for:
            print("error: --epochs-for trains; with --from-results each row's epochs come from its "
                  "results.json, so drop --epochs-for", file=sys.stderr)
            return 2
        return merge(args, objectives or None)
    objectives = objectives or list(OBJECTIVES)
    try:
        args.epochs_for = parse_epochs_for(args.epochs_for, objectives, args.epochs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}; wrn-{args.depth}-"
          f"{args.width}, {args.train_images} train images, epochs {args.epochs_for}, batch "
          f"{args.batch_size}, seed {args.seed}, {args.n_test} test images", flush=True)
    x, y = test_subset(args)
    results, t_start, c_start = {}, time.time(), cpu_seconds()
    for obj in objectives:
        c0 = cpu_seconds()
        model, train_s = train(obj, args)
        c1 = cpu_seconds()
        print(f"{LABELS[obj]}: trained {args.epochs_for[obj]} epochs in {train_s:.0f} s "
              f"({c1 - c0:.0f} CPU s)", flush=True)
        r = {"epochs": args.epochs_for[obj], **evaluate(model, x, y, args)}
        r["train_seconds"], r["train_cpu_seconds"] = train_s, c1 - c0
        r["eval_cpu_seconds"] = cpu_seconds() - c1
        results[obj] = r
        save(results, args, time.time() - t_start, cpu_seconds() - c_start)  # partial results too
        flags = f"  flags: {r['flags']}" if r["flags"] else ""
        print(f"{LABELS[obj]}: clean {fmt(r['clean'])}  PGD-{args.pgd_steps} {fmt(r['pgd'])}  "
              f"AA {fmt(r['aa'])}  ({r['seconds']:.0f} s){flags}", flush=True)
    wall, cpu = time.time() - t_start, cpu_seconds() - c_start
    results = ordered(results, args.order)
    print(table(results, args) + pair_tables(results, args))
    print(f"wall time {wall:.0f} s, CPU time {cpu:.0f} s (on {torch.get_num_threads()} idle cores "
          f"the wall time would be about CPU time / threads)")
    save(results, args, wall, cpu)
    plot(results, args)
    return 0


def merge(args, picked=None) -> int:
    """Re-render the table and PNG from saved ``results.json`` files of one budget (the epochs may
    differ between regimes: each row keeps its own; a file written before rows recorded them
    trained every regime for its ``--epochs``). ``picked`` (``--objectives``): the regimes to take
    from the files, each from one file; None: all of them."""
    results, wall, cpu, budget, source = {}, 0.0, 0.0, None, {}
    keys = ("train_images", "depth", "width", "batch_size", "lr", "n_test", "subset_seed",
            "pgd_steps", "seed")
    for path in args.from_results.split(","):
        try:
            with open(path) as f:
                saved = json.load(f)
            mine = {k: saved["args"][k] for k in keys}
            rows = {o: {"epochs": saved["args"]["epochs"], **r} for o, r in saved["results"].items()}
            if not all(o in CHOICES and type(r["epochs"]) is int and r["epochs"] >= 1
                       for o, r in rows.items()):
                raise ValueError("a row with an unknown regime or without its epochs")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            print(f"error: {path} is not a results.json of this script ({type(e).__name__}: {e}); "
                  "give the results.json files its runs wrote under --out", file=sys.stderr)
            return 2
        if budget is not None and mine != budget:
            print(f"error: {path} used another budget ({mine} vs {budget}); merge runs of one "
                  "budget only", file=sys.stderr)
            return 2
        rows = {o: r for o, r in rows.items() if picked is None or o in picked}
        twice = next((o for o in rows if o in source), None)
        if twice:
            print(f"error: {twice} is in both {source[twice]} and {path}; merge one run of each "
                  "regime (--objectives picks the regimes to take)", file=sys.stderr)
            return 2
        budget = mine
        results.update(rows)
        source.update((o, path) for o in rows)
        wall += sum(r["train_seconds"] + r["seconds"] for r in rows.values())
        cpu += sum(r["train_cpu_seconds"] + r["eval_cpu_seconds"] for r in rows.values())
    missing = [o for o in (picked or []) if o not in results]
    if missing:
        print(f"error: --objectives {missing[0]} is in none of the --from-results files; drop it or "
              "add the results.json that holds it", file=sys.stderr)
        return 2
    vars(args).update(budget)
    args.objectives = ",".join(results)
    results = ordered({o: results[o] for o in CHOICES if o in results}, args.order)
    args.epochs_for = {o: r["epochs"] for o, r in results.items()}
    args.epochs = None if epochs_differ(results) else next(iter(results.values()))["epochs"]
    os.makedirs(args.out, exist_ok=True)
    print(table(results, args) + pair_tables(results, args))
    print(f"summed over the regimes' training and evaluation: wall time {wall:.0f} s, CPU time "
          f"{cpu:.0f} s (of runs made in concurrent processes the CPU seconds are comparable between "
          "regimes, the wall seconds are not)")
    save(results, args, wall, cpu)
    plot(results, args)
    return 0


def save(results: dict, args, wall: float, cpu: float) -> None:
    """``table.md`` and ``results.json`` under ``--out`` (atomic writes)."""
    from advtrain.io.atomic import atomic_write_text

    text = table(results, args) + pair_tables(results, args)
    pairs = near = []
    if len(results) > 1 and all("per_image" in r["clean"] for r in results.values()):
        pairs, near = paired(results), paired(results, neighbours(results))
    atomic_write_text(os.path.join(args.out, "table.md"), text + "\n")
    atomic_write_text(os.path.join(args.out, "results.json"), json.dumps(
        {"args": vars(args), "wall_seconds": wall, "cpu_seconds": cpu, "results": results,
         "order": getattr(args, "order", "given"), "paired": pairs, "neighbours": near}, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
