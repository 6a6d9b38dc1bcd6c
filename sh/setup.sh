#!/usr/bin/env bash
# One-time set-up: a virtual environment with torch and advtrain (editable) plus its dev extra.
# Idempotent: re-running only reinstalls when setup.cfg changed.
#   ADVTRAIN_VENV=path   where the venv lives (default: .venv in the repo)
#   ADVTRAIN_TORCH="torch==2.14.1 torchvision==0.29.1"   what torch to install ("" keeps an existing one)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${ADVTRAIN_VENV:-.venv}"
TORCH_SPEC="${ADVTRAIN_TORCH-torch==2.14.1 torchvision==0.29.1}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.advtrain-setup"
want="$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Quiet unless it fails: pip's output goes to a log, printed only when a step fails.
log="$VENV/advtrain-setup.log"
: > "$log"
step() {  # step "what" cmd...: run cmd with its output in $log; on failure show the log and stop
  local what="$1"; shift
  if ! "$@" >> "$log" 2>&1; then
    echo "[setup] error: $what failed; its output:" >&2
    tail -n 40 "$log" >&2
    echo "[setup] full log: $log" >&2
    exit 1
  fi
}
echo "[setup] installing ${TORCH_SPEC:-advtrain (keeping the installed torch)} + advtrain[dev] into $VENV" \
     "(first time: about 1-2 minutes; log: $log)"
if [ -n "$TORCH_SPEC" ]; then
  # shellcheck disable=SC2086
  step "pip install $TORCH_SPEC" "$VENV/bin/python" -m pip install $TORCH_SPEC
fi
step "pip install -e .[dev] (robustbench, pyautoattack, ...)" "$VENV/bin/python" -m pip install -e ".[dev]"
# robustbench must import in a fresh interpreter, through our autoattack shim, without advtrain
step "'import robustbench' after install (see README, RobustBench and AutoAttack from PyPI)" \
  "$VENV/bin/python" -W ignore -c "import robustbench, robustbench.utils; from autoattack import AutoAttack"
echo "$want" > "$stamp"
echo "[setup] ready: $VENV"
