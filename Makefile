# Two commands on a fresh machine with Python 3.10+ and make:
#   make demo   - the main job
#   make test   - the test suite (then the kernel tests once more under AddressSanitizer)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-asan gpu-check gpu-data bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,plot]'
	touch $(STAMP)

# LeNet-5 on MNIST (GPU when one answers, else the CPU); fails below 99% test accuracy
demo: $(STAMP)
	$(BIN)/gpudl train --model lenet5 --data mnist --out runs/demo --min-accuracy 0.99

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-asan

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x

# The emulated kernels once more, built with -fsanitize=address and run with blocks
# and threads in reverse order: an out-of-bounds access in any .cu file, or a result
# that depends on the order threads run in (a missing __syncthreads), fails here.
# -DGD_INDEX64 builds them with 64-bit loop indices only: the path huge tensors take.
# The CPU's native kernels (kernels/cpu_native.c) are built with ASan in this run too.
test-asan: $(STAMP)
	GPUDL_EMU_ORDER=reverse GPUDL_EMU_CXXFLAGS=-DGD_INDEX64 $(BIN)/python -m gpudl.testing.asan_run tests/test_kernels_emulated.py tests/test_lstm_kernel.py tests/test_batchnorm_kernel.py tests/test_optim_kernel.py tests/test_native.py tests/test_cpu_kernels.py

bench: $(STAMP)
	$(BIN)/python -m gpudl.bench all

# On a GPU machine, from the source tree (no install, no network): CUDA tests,
# compute-sanitizer and the benchmark, written to $$OUT (default gpu-report/).
gpu-check:
	bash scripts/gpu_check.sh

# Copy the MNIST cache into .gpu-data/ (ignored by git) to carry to a GPU machine without network.
gpu-data: $(STAMP)
	$(BIN)/python -c "import importlib, pathlib, shutil; m = importlib.import_module('gpudl.data.mnist'); \
	  out = pathlib.Path('.gpu-data/mnist'); out.mkdir(parents=True, exist_ok=True); \
	  [shutil.copy(p, out) for s in ('train', 'test') if m.mnist(s) is not None \
	   for p in m._find_split(m.search_dirs(None, 'mnist'), s)]"

clean:
	rm -rf $(VENV) build dist *.egg-info
