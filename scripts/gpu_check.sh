#!/usr/bin/env bash
# make gpu-check: the CUDA test suite, the kernels under compute-sanitizer, and the
# benchmark, on a machine with a GPU, CuPy, NumPy, SciPy and pytest (no network needed).
# Run from the source tree; everything lands in $OUT (default: gpu-report/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-report}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
status=0
step() { echo "== $*" | tee -a "$OUT/summary.txt"; }

step "gpudl info"
$PY -m gpudl info 2>&1 | tee "$OUT/info.txt"

step "pytest: every device-parametrised test on cuda, plus the parity tests"
$PY -m pytest -q -p no:cacheprovider tests -k "cuda or parity" -rs \
    --junitxml="$OUT/pytest.xml" 2>&1 | tee "$OUT/pytest.txt" | tail -5
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
tail -1 "$OUT/pytest.txt" >> "$OUT/summary.txt"

if command -v compute-sanitizer >/dev/null 2>&1; then
  for tool in memcheck racecheck; do
    step "compute-sanitizer --tool $tool on the parity tests"
    compute-sanitizer --tool "$tool" --error-exitcode 3 \
        $PY -m pytest -q -p no:cacheprovider tests/test_parity.py -k cuda > "$OUT/sanitizer-$tool.txt" 2>&1
    rc=$?
    tail -3 "$OUT/sanitizer-$tool.txt" >> "$OUT/summary.txt"
    [ $rc -eq 0 ] || status=1
  done
else
  step "compute-sanitizer not found: skipped"
fi

step "LeNet-5 on MNIST, 2 epochs on the GPU, gpudl and PyTorch (data from \$GPUDL_DATA, default .gpu-data)"
GPUDL_DATA=${GPUDL_DATA:-$PWD/.gpu-data} $PY scripts/gpu_mnist.py --epochs 2 --json "$OUT/mnist.json" \
    2>&1 | tee "$OUT/mnist.txt" | tail -4 >> "$OUT/summary.txt" || status=1

step "benchmark: python -m gpudl.bench all --device cuda --json"
$PY -m gpudl.bench all --device cuda --json > "$OUT/bench.json" 2> "$OUT/bench.log" || status=1
tail -20 "$OUT/bench.log" >> "$OUT/summary.txt"

step "done (status $status)"
exit $status
