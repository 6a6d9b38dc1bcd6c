#!/usr/bin/env bash
# The paper's evaluation: AutoAttack standard, Linf eps 8/255, first 10,000 test images, batch 200.
# Usage: sh/eval_autoattack.sh CHECKPOINT DATASET [extra advtrain eval args]
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 CHECKPOINT cifar10|cifar100 [extra 'advtrain eval' args, e.g. --weights ema]" >&2
  exit 2
fi
ckpt="$1"; dataset="$2"; shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -x "$root/.venv/bin/advtrain" ]; then advtrain="$root/.venv/bin/advtrain"; else advtrain="advtrain"; fi
exec "$advtrain" eval "$ckpt" --dataset "$dataset" --version standard --norm Linf --eps 8/255 \
  --n-ex 10000 --batch-size 200 "$@"
