#!/usr/bin/env bash
# Catastrophic overfitting reproduced on a CPU, with and without the guard (about 2 CPU minutes):
# GradAlign's one-layer CNN trained with FGSM from x at 16/255 (configs/cpu/co_cnn_fgsm16.yaml) on
# real CIFAR-10 images, once with guard.policy warn (the unguarded trajectory: PGD-10 falls to 0%
# while FGSM climbs to 100%) and once with rollback (stops at the collapse, weights back to the most
# robust epoch). Writes per-epoch CSVs and a figure (PNG + SVG) under bench/out/co.
# Usage: ADVTRAIN_DATA=../shared/data/cifar10-jpeg bash sh/co_reproduce_cpu.sh [--policy stop] [--seed N]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python; fi
data="${ADVTRAIN_DATA:-../shared/data/cifar10-jpeg}"
exec "$python" bench/co_reproduce.py --data "$data" --out bench/out/co "$@"
