#!/usr/bin/env bash
# The main job, from a fresh clone: set up, train GKL-AT briefly (a small WRN on CIFAR-10), run
# AutoAttack (APGD-CE + APGD-T on a CPU, standard on a GPU) on a fixed random test subset, write the RobustBench result card,
# export a checkpoint that robustbench.utils.load_model reads, and print where everything is.
#
# Data: CIFAR-10 is downloaded by torchvision when online. Offline, point ADVTRAIN_DATA at a folder
# with train.npz/test.npz (keys image, label) or cifar-10-batches-bin/ or cifar-10-batches-py/, e.g.
#   ADVTRAIN_DATA=../shared/data/cifar10-jpeg bash sh/quickstart.sh
# Knobs: QUICKSTART_EPOCHS (4), QUICKSTART_N_EX (AutoAttack images, 200), QUICKSTART_AA
#   (standard|fast; default standard on a GPU, fast on a CPU = AutoAttack's APGD-CE + APGD-T, the two
#   attacks that already reach the final number in the paper's AutoAttack logs; the full standard
#   suite adds FAB-T and Square, several minutes more on a CPU), extra args -> advtrain train
# Time on two idle cores: setup 1-2 min the first time (seconds after), training about 2 min,
# AutoAttack under 1 min, export and load-back seconds. More cores: torch uses all of them;
# OMP_NUM_THREADS=N caps it, data.workers=N adds data-loading processes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash sh/setup.sh
PY="${ADVTRAIN_VENV:-.venv}/bin/python"
NAME="Advtrain2026Quickstart_WRN-10-1"
RUN="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
EPOCHS="${QUICKSTART_EPOCHS:-4}"
N_EX="${QUICKSTART_N_EX:-200}"

if [ -n "${ADVTRAIN_DATA:-}" ]; then
  echo "[quickstart] data: ADVTRAIN_DATA=$ADVTRAIN_DATA"
else
  echo "[quickstart] data: ADVTRAIN_DATA is not set, so CIFAR-10 is downloaded into ./data (needs internet)."
  echo "             Offline? Run again with ADVTRAIN_DATA=DIR (train.npz/test.npz or CIFAR-10 folders)."
fi
# Fail early and plainly when there is no data (one line from advtrain, no traceback).
"$PY" -c "
import sys
from advtrain.data import resolve_source
from advtrain.errors import AdvtrainError
try:
    for split in ('train', 'test'):
        resolve_source('cifar10', split)
except AdvtrainError as e:
    sys.exit('[quickstart] no CIFAR-10 data: ' + str(e))
"

echo "[quickstart] 1/4 train GKL-AT, $EPOCHS epochs (configs/cpu/quickstart.yaml) -> $RUN" \
     "(about 30 s per epoch on two idle cores; each epoch prints its time and the ETA)"
"$PY" -m advtrain train configs/cpu/quickstart.yaml "optim.epochs=$EPOCHS" "$@" --run-dir "$RUN"

AA="${QUICKSTART_AA:-$("$PY" -c 'import torch; print("standard" if torch.cuda.is_available() else "fast")')}"
case "$AA" in standard|fast) ;; *) echo "[quickstart] QUICKSTART_AA must be standard or fast, not '$AA'" >&2; exit 2;; esac
if [ "$AA" = fast ]; then
  aa_args=(--version custom --attacks apgd-ce,apgd-t); aa_desc="APGD-CE + APGD-T (CPU default; QUICKSTART_AA=standard for all four)"
else
  aa_args=(--version standard); aa_desc="standard"
fi
echo "[quickstart] 2/4 AutoAttack $aa_desc, Linf 8/255, on $N_EX random test images -> card" \
     "(CPU: under a minute, two idle cores; each attack prints its time when done)"
"$PY" -m advtrain eval "$RUN/last.pt" --dataset cifar10 --n-ex "$N_EX" --subset random \
  "${aa_args[@]}" --eps 8/255 --batch-size 100 --name "$NAME" --out model_info --overwrite \
  --venue "advtrain quickstart (CPU demo, not a paper result)" \
  --footnote "short CPU run: $EPOCHS epochs of configs/cpu/quickstart.yaml" \
  | tee "$RUN/eval.txt"

echo "[quickstart] 3/4 export for RobustBench -> checkpoints/"
"$PY" -m advtrain export "$RUN/last.pt" --name "$NAME" --dataset cifar10 --threat-model Linf \
  --model-dir checkpoints --overwrite

echo "[quickstart] 4/4 load the export with robustbench.utils.load_model"
"$PY" - "$NAME" <<'PYEOF'
import sys, torch
import advtrain.hub.export
from robustbench.utils import load_model
name = sys.argv[1]
advtrain.hub.export.register_model_dir("checkpoints")   # teaches RobustBench our architecture
model = load_model(name, model_dir="checkpoints", dataset="cifar10", threat_model="Linf")
x = torch.rand(4, 3, 32, 32)
with torch.no_grad():
    print(f"[quickstart] robustbench.utils.load_model({name!r}) -> {type(model).__name__}, "
          f"logits {tuple(model(x).shape)}")
PYEOF

cat <<EOF
[quickstart] done. Artefacts:
  run directory      $RUN  (metrics.csv, curves.png/.svg, config.yaml, summary.txt, epoch_*.pt, last.pt)
  RobustBench card   model_info/cifar10/Linf/$NAME.json  (+ $NAME.advtrain.json: per-attack results, flags)
  RobustBench export checkpoints/cifar10/Linf/$NAME.pt  (+ $NAME.advtrain.json: architecture)
EOF
