"""One-command GPU check (``bash bench/gpu_check.sh``): the GPU code paths run, and what they give.

On one CUDA GPU, each row in its own subprocess (so global flags do not leak between rows):

* ``train <mode>``: the quickstart config (configs/cpu/quickstart.yaml, WRN-16-2 GKL-AT) for two
  epochs of 16 steps (batch 128, 2 loader workers, pinned memory, ``cudnn.benchmark``) in fp32 (TF32
  off), TF32, bf16 autocast, channels_last and ``torch.compile``; figure: training images/s of the
  *second* epoch (attack included), so CUDA start-up, worker start-up, autotuning and compilation --
  all in epoch 1 -- are not in it;
* ``train ddp+syncbn``: the same under ``torchrun --standalone --nproc_per_node 1`` (an NCCL group
  of one rank: the DDP wrapper, SyncBatchNorm conversion and every collective of ``fit()`` on CUDA
  tensors); figure: images/s;
* ``eval bf16``: ``advtrain eval --precision bf16`` (APGD-CE) with its fp32 guard; figure: the
  guard's robust-accuracy gap and disagreeing examples;
* ``resume bits``: 2 epochs straight vs 1 epoch + resume, deterministic kernels; figure: the
  largest weight difference (ok when 0);
* ``bench_gpu MFU``: ``bench/bench_gpu.py`` for WRN-34-10 GKL-AT (batch 128, bf16, 3 warm-up and 10
  timed steps); figure: MFU with the batch resident on the GPU and through the real loader.

Data: ``ADVTRAIN_DATA`` when set, else random CIFAR-shaped npz files (the check is about the code
paths and speed, not accuracy). Prints one table ``check | ok/FAIL | figure``; exit 1 when a row
failed, 0 otherwise (and 0 with a message when there is no CUDA GPU).
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "cpu", "quickstart.yaml")
N_TRAIN, BATCH = 2048, 128  # 16 steps per epoch; the figure is epoch 2's (steady state)
FEW = [f"data.train_subset={N_TRAIN}", f"data.batch_size={BATCH}", "data.test_subset=64",
       "data.workers=2", "optim.epochs=2", "eval.test_pgd_steps=2", "run.device=cuda",
       "run.progress=false"]
# the trainer applies its TF32 policy from the config (``tf32``, default true): fp32 asks it off
MODES = {"fp32": ["tf32=false"], "tf32": ["tf32=true"], "bf16": ["precision=bf16"],
         "channels_last": ["model.channels_last=true"], "compile": ["compile=true"]}


def make_data(folder: str) -> str:
    import numpy as np

    rng = np.random.default_rng(0)
    for name, n in (("train", 4096), ("test", 256)):
        np.savez(os.path.join(folder, f"{name}.npz"),
                 image=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 label=rng.integers(0, 10, n).astype(np.int64))
    return folder


def images_per_s(run_dir: str) -> str:
    """Training images/s of the last epoch (epoch 2: start-up and compilation happened in epoch 1)."""
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        row = list(csv.DictReader(f))[-1]
    return f"{N_TRAIN / float(row['seconds']):.0f} img/s (epoch {row['epoch']})"


def run(cmd, env, timeout) -> tuple:
    t0 = time.time()
    try:
        p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s", ""
    out = p.stdout + p.stderr
    if p.returncode:
        last = [line for line in out.strip().splitlines() if line.strip()][-1:] or ["?"]
        return False, f"exit {p.returncode}: {last[0][:70]}", out
    return True, f"{time.time() - t0:.0f} s", out


# ---------------------------------------------------------------- child processes

def child_train(mode: str, run_dir: str) -> int:
    import torch

    torch.backends.cudnn.benchmark = True  # fixed shapes; autotuned in epoch 1 (the trainer's policy too)
    from advtrain.cli import main

    return main(["train", CONFIG, *FEW, *MODES[mode], "--run-dir", run_dir])


def child_resume(folder: str) -> int:
    """2 epochs straight and 1 + resume with deterministic kernels; prints the largest difference."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)
    import advtrain
    from advtrain import config as C
    from advtrain.io.safeload import load_state_file

    cfg = C.load(CONFIG, FEW)  # 2 epochs
    a, b = os.path.join(folder, "straight"), os.path.join(folder, "resumed")
    advtrain.fit(cfg, run_dir=a)
    advtrain.fit(cfg, run_dir=b, stop_after=1)
    advtrain.fit(None, run_dir=b, resume=True)
    sa, sb = (load_state_file(os.path.join(d, "last.pt"))["model"] for d in (a, b))
    diff = max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa
               if sa[k].is_floating_point())
    print(f"max|diff| {diff:.3g}")
    return 0 if diff == 0 else 1


# ---------------------------------------------------------------- the checks

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", nargs=2, metavar=("KIND", "ARG"), help=argparse.SUPPRESS)
    p.add_argument("--keep", action="store_true", help="keep the temporary run directories")
    args = p.parse_args(argv)
    if args.child:
        kind, arg = args.child
        return child_train(*arg.split("@", 1)) if kind == "train" else child_resume(arg)

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine; nothing to check (exit 0)")
        return 0
    folder = tempfile.mkdtemp(prefix="advtrain-gpu-check-")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
    env.setdefault("ADVTRAIN_DATA", make_data(folder))
    print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"data {env['ADVTRAIN_DATA']}, work dir {folder}", flush=True)
    py, rows = sys.executable, []

    def row(name, ok, figure, out=""):
        rows.append((name, ok, figure))
        print(f"  {name:18s} {'ok' if ok else 'FAIL'}  {figure}", flush=True)
        if not ok and out:
            print("    " + "\n    ".join(out.strip().splitlines()[-15:]), flush=True)

    for mode in MODES:
        rd = os.path.join(folder, f"train-{mode}")
        ok, fig, out = run([py, __file__, "--child", "train", f"{mode}@{rd}"], env, 300)
        row(f"train {mode}", ok, images_per_s(rd) if ok else fig, out)

    rd = os.path.join(folder, "train-ddp")
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    ok, fig, out = run([*torchrun, "-m", "advtrain", "train", CONFIG, *FEW, "sync_bn=true",
                        "--run-dir", rd], env, 300)
    row("train ddp+syncbn", ok, images_per_s(rd) + " (NCCL, 1 rank)" if ok else fig, out)

    ck = os.path.join(folder, "train-fp32", "last.pt")
    model_info = os.path.join(folder, "model_info")
    ok, fig, out = run([py, "-m", "advtrain", "eval", ck, "--dataset", "cifar10", "--n-ex", "128",
                        "--version", "custom", "--attacks", "apgd-ce", "--n-iter", "10",
                        "--batch-size", "128", "--precision", "bf16", "--guard-n", "64",
                        "--name", "GpuCheck", "--out", model_info, "--device", "cuda",
                        "--quiet"], env, 300)
    if ok:
        fig = _guard_figure(model_info) or fig
    row("eval bf16+guard", ok, fig, out)

    ok, fig, out = run([py, __file__, "--child", "resume", os.path.join(folder, "resume")], env, 300)
    found = re.search(r"max\|diff\| (\S+)", out)
    row("resume bits", ok, f"max|diff| {found.group(1)}" if found else fig, out)

    ok, fig, out = run([py, os.path.join(ROOT, "bench", "bench_gpu.py"), "--batches", "128",
                        "--precisions", "bf16", "--steps", "5", "--warmup", "3", "--repeats", "10",
                        "--workers", "4"], env, 300)
    found = dict(re.findall(r"(resident|loader)\s*:.*MFU (\S+)", out))
    row("bench_gpu MFU", ok and len(found) == 2,
        f"WRN-34-10 GKL-AT bf16 b128 MFU {found.get('resident')} resident, {found.get('loader')} "
        f"through the loader" if found else fig, out)

    print("\n| check | ok/FAIL | figure |\n|---|---|---|")
    for name, ok, figure in rows:
        print(f"| {name} | {'ok' if ok else 'FAIL'} | {figure} |")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if all(ok for _, ok, _ in rows) else 1


def _guard_figure(model_info: str) -> str:
    for path in glob.glob(os.path.join(model_info, "**", "*.advtrain.json"), recursive=True):
        with open(path) as f:
            found = _find(json.load(f), "guard_n")
        if found:
            return (f"guard gap {found['gap']:.3f}, {found['disagree']}/{found['guard_n']} "
                    "examples differ")
    return ""


def _find(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            hit = _find(v, key)
            if hit:
                return hit
    return None


if __name__ == "__main__":
    raise SystemExit(main())
