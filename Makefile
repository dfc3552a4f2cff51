# Two commands: `make repro` runs the pipeline, `make test` runs the tests. Both set up .venv first
# (again whenever the pins or the torch choice change), so a fresh clone needs only Python 3.11, git and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
# The torch build. cpu: no CUDA libraries (on Linux PyTorch's +cpu build; on macOS PyPI's, a CPU build too).
# cuda: PyPI's Linux build and the CUDA libraries pinned in requirements-cuda.txt. auto: cuda where an NVIDIA
# driver is loaded, else cpu.
TORCH ?= auto
TORCH_BUILD := $(if $(filter auto,$(TORCH)),$(shell test -e /proc/driver/nvidia/version || nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu),$(TORCH))
ifeq ($(filter cpu cuda,$(TORCH_BUILD)),)
$(error TORCH=$(TORCH): expected cpu, cuda or auto)
endif
TORCH_VERSION = $(shell sed -n 's/^torch==\([^ ;]*\).*/\1/p' requirements.txt)
# Where the +cpu build comes from when pip finds no wheel of it without an index (as in a find-links folder).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
READY := $(VENV)/.ready-$(TORCH_BUILD)
# What `make pins` moves to requirements-cuda.txt: what PyPI's Linux torch adds to its CPU build.
CUDA_PINS := ^(cuda-|nvidia-|triton==)
# The stages' commands (dvc.yaml: `python -m stages...`) find the venv's python through PATH. Recipes name
# $(BIN)/ explicitly: macOS's make 3.81 looks programs up in the PATH it started with.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: repro test test-fast exps verify verify-arm bench lint setup pins clean

repro: setup
	$(BIN)/dvc repro

# Test processes at once (pytest-xdist): most tests wait on dvc, torch and subprocesses. JOBS=auto: one per core.
JOBS ?= 2

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(JOBS) --dist loadfile

# The tests that take under 5 s each on a 2-core machine: the tier to run while editing.
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(JOBS) --dist loadfile -m "not slow"

# The experiments side by side, without a column per dependency md5.
exps: setup
	$(BIN)/dvc exp show --only-changed --drop 'Created|Executor|stages/.*|data/.*|artifacts/.*'

verify: setup
	$(BIN)/python -m tools.verify

# Opt-in, not part of `make test`: downloads Debian's arm64 Python and the aarch64 wheels (with the CUDA
# libraries) into build/arm/, then runs the pipeline under qemu-aarch64-static for each emulated CPU
# (tools/verify_arm.py; CPUS="cortex-a72 neoverse-n1" picks some).
verify-arm: setup
	$(BIN)/python -m tools.verify_arm $(if $(CPUS),--cpus "$(CPUS)")

bench: setup
	$(BIN)/python -m tools.bench
	$(BIN)/python -m tools.bench_repro

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

setup: $(READY) build/plots.html

$(READY): requirements.txt requirements-cuda.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.ready*
ifeq ($(TORCH_BUILD),cuda)
# `===` matches this exact release only, never a local build such as +cpu (which it replaces).
	$(PIP) install -q -r requirements.txt -r requirements-cuda.txt torch===$(TORCH_VERSION)
else ifeq ($(shell uname -s),Linux)
	$(PIP) install -q --no-deps --no-index torch==$(TORCH_VERSION)+cpu 2>/dev/null \
	  || $(PIP) install -q --no-deps --index-url $(TORCH_CPU_INDEX) torch==$(TORCH_VERSION)+cpu
	$(PIP) install -q -r requirements.txt
else
	$(PIP) install -q -r requirements.txt
endif
	touch $@

# Resolves requirements.in again for every platform at once, without installing; the current pins are kept
# where they still fit (UPGRADE=--upgrade takes the newest releases).
pins: $(READY)
	mkdir -p build
	cat requirements.txt requirements-cuda.txt > build/pins.txt
	$(BIN)/uv pip compile --quiet --no-config --system-certs --universal --python-version 3.11 --no-header \
	  --annotation-style line $(UPGRADE) requirements.in -o build/pins.txt
	{ grep '^#' requirements.txt; grep -v -E '$(CUDA_PINS)' build/pins.txt; } > build/requirements.txt
	{ grep '^#' requirements-cuda.txt; grep -E '$(CUDA_PINS)' build/pins.txt; } > build/requirements-cuda.txt
	mv build/requirements.txt build/requirements-cuda.txt .

build/plots.html: tools/build_plots_page.py $(READY)
	$(BIN)/python tools/build_plots_page.py $@

clean:
	rm -rf $(VENV) build dvc_plots
