VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export MUJOCO_GL ?= egl

.PHONY: setup test test-fast demo bench lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch first where no GPU is present: an unpinned torch pulls multi-GB CUDA wheels.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

demo: setup
	$(VENV)/bin/pourlit collect -c configs/collect/pouring.yaml --episodes 20 --num-envs 2 --out runs/demo/data --seed 0
	$(VENV)/bin/pourlit inspect runs/demo/data
	$(VENV)/bin/pourlit render runs/demo/data/rollout_00000.h5 -o runs/demo/episode0.mp4

bench: setup
	$(PY) benchmarks/bench_sim.py

lint: setup
	$(VENV)/bin/ruff check pourlit tests benchmarks
	$(VENV)/bin/ruff format --check pourlit tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
