#!/usr/bin/env bash
# make gpu-check: the CUDA test suite, the kernels under compute-sanitizer, LeNet-5 on
# MNIST next to PyTorch, and the benchmark, on a machine with a GPU, CuPy, NumPy and
# pytest (no network needed). Run from the source tree; results land in $OUT (default
# gpu-report/) as six files: summary.txt, pytest.txt, sanitizer.txt, mnist.json,
# bench.json, bench.log. Every step has its own time limit (seconds, overridable:
# T_PYTEST, T_SANITIZER, T_MNIST, T_TRAIN, T_BENCH; T_TEST per test) so one hang cannot eat the
# whole run. PYTEST_WORKERS (default 4) spreads the CUDA tests over processes with pytest-xdist.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-report}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
S="$OUT/summary.txt"
status=0
step() { echo "== $* ($(date +%T))" | tee -a "$S"; }
fail() { echo "   FAILED: $*" | tee -a "$S"; status=1; }

step "device"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import cupy, numpy, sys; print('python', sys.version.split()[0], '| cupy', cupy.__version__, '| numpy', numpy.__version__, '| CUDA runtime', cupy.cuda.runtime.runtimeGetVersion())"
  $PY -c "import torch; print('torch', torch.__version__)"
  $PY -m gpudl info; } 2>&1 | tee -a "$S"

step "pytest: every device-parametrised test on cuda, plus the parity tests"
# Spread over PYTEST_WORKERS processes (default 4) where pytest-xdist is installed, and give
# each test at most T_TEST seconds where pytest-timeout is: one hang costs one test, not the step.
par=()
$PY -c "import xdist" 2>/dev/null && [ "${PYTEST_WORKERS:-4}" -gt 1 ] && par+=(-n "${PYTEST_WORKERS:-4}")
$PY -c "import pytest_timeout" 2>/dev/null && par+=(--timeout "${T_TEST:-60}")
timeout "${T_PYTEST:-240}" $PY -m pytest -q -p no:cacheprovider "${par[@]}" tests \
    -k "(cuda or parity) and not emulated" -rfEs --tb=short > "$OUT/pytest.txt" 2>&1 \
    || fail "pytest (exit $?)"
tail -1 "$OUT/pytest.txt" | tee -a "$S"

: > "$OUT/sanitizer.txt"
if command -v compute-sanitizer >/dev/null 2>&1; then
  for tool in memcheck racecheck; do
    step "compute-sanitizer --tool $tool on the kernel parity tests"
    echo "===== $tool" >> "$OUT/sanitizer.txt"
    timeout "${T_SANITIZER:-100}" compute-sanitizer --tool "$tool" --error-exitcode 3 \
        $PY -m pytest -q -p no:cacheprovider tests/test_parity.py tests/test_batchnorm_kernel.py tests/test_optim_kernel.py -k "cuda and not whole" \
        >> "$OUT/sanitizer.txt" 2>&1 || fail "compute-sanitizer $tool (exit $?)"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed|failed" "$OUT/sanitizer.txt" | tail -2 | tee -a "$S"
  done
else
  step "compute-sanitizer not found: skipped"
fi

step "LeNet-5 on MNIST, 2 epochs on the GPU, gpudl and PyTorch (data from \$GPUDL_DATA, default .gpu-data)"
GPUDL_DATA=${GPUDL_DATA:-$PWD/.gpu-data} timeout "${T_MNIST:-150}" \
    $PY scripts/gpu_mnist.py --epochs 2 --json "$OUT/mnist.json" 2>&1 | tee -a "$S" \
    || fail "MNIST run (exit ${PIPESTATUS[0]})"

step "the demo on the GPU: gpudl train --model lenet5 --data mnist (the make demo recipe), and the LSTM on seqmnist"
for model in lenet5 lstm; do
  epochs=4; [ "$model" = lstm ] && epochs=2
  GPUDL_DATA=${GPUDL_DATA:-$PWD/.gpu-data} timeout "${T_TRAIN:-90}" $PY -m gpudl train --model "$model" \
      --data "$([ "$model" = lstm ] && echo seqmnist || echo mnist)" --epochs "$epochs" --device cuda \
      --out "/tmp/gpudl-gpu-$model" --no-progress 2>&1 | tail -6 | tee -a "$S" || fail "gpudl train $model (exit ${PIPESTATUS[0]})"
done

step "benchmark: python -m gpudl.bench all --device cuda --json"
timeout "${T_BENCH:-150}" $PY -m gpudl.bench all --device cuda --repeat 9 --json \
    > "$OUT/bench.json" 2> "$OUT/bench.log" || fail "benchmark (exit $?)"
tail -5 "$OUT/bench.log" | tee -a "$S"
$PY -m gpudl.bench show "$OUT/bench.json" 2>&1 | tee -a "$S"

step "done (status $status)"
exit $status
