#!/usr/bin/env bash
# Run the test suite once per CPU kernel set this machine offers (ATEN_CPU_CAPABILITY = default,
# avx2, avx512 as /proc/cpuinfo allows) x intra-op threads (ADVTRAIN_TEST_THREADS = 1, 2).
# No result may depend on SIMD width or thread count; exits non-zero if any run fails.
# Extra args go to pytest, e.g. `bash sh/test_matrix.sh -x tests/objectives/test_objectives_spec.py`.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash sh/setup.sh || exit 1
VENV="${ADVTRAIN_VENV:-.venv}"
caps="default"
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
[[ " $flags " == *" avx2 "* ]] && caps="$caps avx2"
[[ " $flags " == *" avx512f "* ]] && caps="$caps avx512"
failed=()
for cap in $caps; do
  for threads in 1 2; do
    echo "== ATEN_CPU_CAPABILITY=$cap ADVTRAIN_TEST_THREADS=$threads"
    ATEN_CPU_CAPABILITY=$cap ADVTRAIN_TEST_THREADS=$threads "$VENV/bin/python" -m pytest -q "$@" \
      || failed+=("$cap/$threads")
  done
done
if ((${#failed[@]})); then
  echo "test matrix: FAILED for capability/threads: ${failed[*]}" >&2
  exit 1
fi
echo "test matrix: all runs passed ($caps x threads 1 2)"
