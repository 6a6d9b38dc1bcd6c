#!/usr/bin/env bash
# GPU check in one command (under 5 minutes on one CUDA GPU): the quickstart config for a few steps
# in fp32, TF32, bf16 autocast, channels_last, torch.compile and DDP+SyncBN under
# `torchrun --nproc_per_node 1` (NCCL); `advtrain eval --precision bf16` with its fp32 guard; a
# resume compared bit for bit; bench/bench_gpu.py's WRN-34-10 GKL-AT MFU. Prints one table
# (check | ok/FAIL | figure); exit 1 when a check failed. Without CUDA it says so and exits 0.
#   bash bench/gpu_check.sh            # ADVTRAIN_DATA=DIR to train on real CIFAR-10 npz files
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${ADVTRAIN_VENV:-.venv}/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"
exec "$PY" bench/gpu_check.py "$@"
