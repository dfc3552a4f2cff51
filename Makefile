# Two commands: `make repro` runs the pipeline, `make test` runs the tests. Both set up .venv first
# (again whenever requirements.txt changes), so a fresh clone needs only Python 3.11, git and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
# The stages' commands (dvc.yaml: `python -m stages...`) find the venv's python through PATH. Recipes name
# $(BIN)/ explicitly: macOS's make 3.81 looks programs up in the PATH it started with.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: repro test verify bench lint setup clean

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest

verify: setup
	$(BIN)/python -m tools.verify

bench: setup
	$(BIN)/python -m tools.bench
	$(BIN)/python -m tools.bench_repro

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

setup: $(READY) build/plots.html

$(READY): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

build/plots.html: tools/build_plots_page.py $(READY)
	$(BIN)/python tools/build_plots_page.py $@

clean:
	rm -rf $(VENV) build dvc_plots
