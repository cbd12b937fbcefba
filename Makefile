# The entry points a newcomer uses. `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
NEAR := $(VENV)/bin/near
# CPU machines take the pinned CPU wheel; on a GPU machine: make setup TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
WORKERS ?= 2

.PHONY: setup demo test test-fast slurm-up slurm-down bench figures clean-demo

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(NEAR) sweep add sweeps/demo.yaml
	$(NEAR) sweep run experiments/demo --workers $(WORKERS)
	$(NEAR) report experiments/demo

# Full suite: brings up the local SLURM cluster (needs root) and requires it.
test: setup slurm-up
	NEAR_REQUIRE_SLURM=1 $(PY) -m pytest -q -ra

# Everything that does not need the cluster.
test-fast: setup
	$(PY) -m pytest -q -ra -m "not slurm"

slurm-up:
	bash slurm/up.sh

slurm-down:
	bash slurm/down.sh

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

figures: setup
	@for d in experiments/*/; do test -f $$d/jobs.db && $(NEAR) report $$d; done; true
