#!/usr/bin/env bash
# Train one config, then evaluate it as the paper did (AutoAttack standard, Linf 8/255, 10k test images;
# EVAL_EPS=0.031 in the environment changes the radius, as for LBGAT0/6 in RobustBench).
# Usage: sh/train_config.sh CONFIG DATASET average|best|last|ema [key=value ... overrides for 'advtrain train']
#   average: 'advtrain average RUN' with the run's own average: section (tau, start, end; the
#            reference swa.py 0.9 1 E), then evaluate that file (DKL and TRADES-AWP rows);
#   best:    evaluate the EMA weights of best.pt, the epoch with the best PGD-40 accuracy on the
#            held-out training images (DM pipeline rows, SPEC 6);
#   last:    evaluate the weights of the last epoch (LBGAT rows: the reference averages nothing;
#            robust distillation, SPEC 12);
#   ema:     evaluate the in-loop EMA weights of the last checkpoint.
# Run directory: runs/<config name>. Interrupted? continue with: advtrain train --resume runs/<config name>
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 CONFIG cifar10|cifar100 average|best|last|ema [key=value ...]" >&2
  exit 2
fi
config="$1"; dataset="$2"; weights="$3"; shift 3
case "$weights" in
  average|best|last|ema) ;;
  *) echo "$0: unknown weights '$weights'; use average, best, last or ema" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ -x .venv/bin/advtrain ]; then advtrain=.venv/bin/advtrain; else advtrain=advtrain; fi
run="runs/$(basename "$config" .yaml)"
# the card is named after the experiment (not the checkpoint stem, which every run shares: last.pt);
# evaluating the same experiment again (after a resume) replaces its own card
eval_args=(--name "$(basename "$config" .yaml)" --overwrite)
if [ -n "${EVAL_EPS:-}" ]; then eval_args+=(--eps "$EVAL_EPS"); fi
"$advtrain" train "$config" --run-dir "$run" "$@"
case "$weights" in
  average)
    out="$("$advtrain" average "$run")"
    echo "$out"
    ckpt="$(printf '%s\n' "$out" | sed -n 's/^advtrain average: wrote //p')"
    bash sh/eval_autoattack.sh "$ckpt" "$dataset" ${eval_args[@]+"${eval_args[@]}"} ;;
  best) bash sh/eval_autoattack.sh "$run/best.pt" "$dataset" --weights ema ${eval_args[@]+"${eval_args[@]}"} ;;
  last) bash sh/eval_autoattack.sh "$run/last.pt" "$dataset" ${eval_args[@]+"${eval_args[@]}"} ;;
  ema)  bash sh/eval_autoattack.sh "$run/last.pt" "$dataset" --weights ema ${eval_args[@]+"${eval_args[@]}"} ;;
esac
