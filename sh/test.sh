#!/usr/bin/env bash
# Set up (venv + install, see sh/setup.sh) and run the test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash sh/setup.sh
VENV="${ADVTRAIN_VENV:-.venv}"
exec "$VENV/bin/python" -m pytest -q "$@"
