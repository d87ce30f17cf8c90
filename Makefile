# depthcube: `make setup` once, then `make cube` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
DEMO ?= data/demo
CUBE ?= data/cube.zarr
PYTHON ?= $(shell bash .ci/find-python312)

.PHONY: setup cube demo test test-slow test-all bench bench-quick train-demo clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "no Python >= 3.12 found; pass PYTHON=/path/to/python3.12" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# pyinterp: wheels only (an sdist needs Boost/Eigen/cmake); the local mirror's missing dirs are noise.
	set -o pipefail; $(PY) -m pip install -q --only-binary=pyinterp -e '.[test,train,export,s3,bench,download]' 2>&1 | { grep -v 'is ignored' || true; }
	$(PY) -c 'import zarr, xbatcher, netCDF4, gsw, torch, torchdata, lightning, tensorboard, rasterio, rioxarray, s3fs, pyinterp, psutil, copernicusmarine'
	@touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/depthcube demo $(DEMO) --preset small

# build prints the cube's summary itself (depthcube info CUBE prints it again later).
cube: demo
	$(BIN)/depthcube build configs/cube.yaml

test: setup
	$(BIN)/pytest -q -m "not slow" --timeout=600

# The tests marked slow (kept out of `make test`); .ci/run runs them after `make test`.
test-slow: setup
	$(BIN)/pytest -q -m slow --timeout=1800 || [ $$? -eq 5 ]  # 5 = no slow test selected

test-all: setup
	$(BIN)/pytest -q --timeout=1800

bench: setup
	$(BIN)/depthcube bench --cube $(CUBE) --demo $(DEMO) --out bench/results.json

bench-quick: setup
	$(BIN)/depthcube bench --quick --out bench/results-quick.json

train-demo: setup
	$(BIN)/depthcube train configs/train.yaml

clean:
	rm -rf data/demo data/cube.zarr bench/results*.json
