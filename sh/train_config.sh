#!/usr/bin/env bash
# Train one config, then evaluate it as the paper did (AutoAttack standard, Linf 8/255, 10k test images).
# Usage: sh/train_config.sh CONFIG DATASET average|ema|last [key=value ... overrides for 'advtrain train']
#   average: 'advtrain average RUN --tau 0.9 --start 1' (the reference swa.py 0.9 1 E), evaluate that file;
#   ema:     evaluate the in-loop EMA weights of the last checkpoint (DM pipeline, SPEC 6);
#   last:    evaluate the weights of the last checkpoint (robust distillation, SPEC 12).
# Run directory: runs/<config name>. Interrupted? continue with: advtrain train --resume runs/<config name>
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 CONFIG cifar10|cifar100 average|ema|last [key=value ...]" >&2
  exit 2
fi
config="$1"; dataset="$2"; weights="$3"; shift 3
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ -x .venv/bin/advtrain ]; then advtrain=.venv/bin/advtrain; else advtrain=advtrain; fi
run="runs/$(basename "$config" .yaml)"
"$advtrain" train "$config" --run-dir "$run" "$@"
if [ "$weights" = average ]; then
  "$advtrain" average "$run" --tau 0.9 --start 1
  ckpt="$(ls -t "$run"/average_tau0.9_1_*.pt | head -n 1)"
  bash sh/eval_autoattack.sh "$ckpt" "$dataset"
elif [ "$weights" = last ]; then
  bash sh/eval_autoattack.sh "$run/last.pt" "$dataset"
else
  bash sh/eval_autoattack.sh "$run/last.pt" "$dataset" --weights ema
fi
