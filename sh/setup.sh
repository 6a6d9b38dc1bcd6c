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
if [ -n "$TORCH_SPEC" ]; then
  echo "[setup] installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $TORCH_SPEC
fi
echo "[setup] installing advtrain[dev] (robustbench, pyautoattack, ...)"
"$VENV/bin/python" -m pip install -q -e ".[dev]"
# robustbench must import in a fresh interpreter, through our autoattack shim, without advtrain
"$VENV/bin/python" -c "import robustbench, robustbench.utils; from autoattack import AutoAttack" \
  || { echo "[setup] error: 'import robustbench' fails after install; see README (Troubleshooting)" >&2; exit 1; }
echo "$want" > "$stamp"
echo "[setup] ready: $VENV"
