# The entry points a newcomer uses. `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
NEAR := $(VENV)/bin/near
# CPU machines take the pinned CPU wheel; on a GPU machine: make setup TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
WORKERS ?= 2
# The reduced demo CI runs through SLURM: tiny budgets (8 iterations still end an episode, so the
# imitation metrics are logged and every figure has data).
CI_DEMO_VARS ?= --var rl_iters=8 --var ncsn_iters=30 --var num_envs=16

.PHONY: setup demo demo-slurm test test-fast slurm-up slurm-down bench figures chromium gl

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev,gpu]'
	$(PY) -m pip install -q --no-deps 'rliable==1.2.0'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(NEAR) sweep add sweeps/demo.yaml
	$(NEAR) sweep run experiments/demo --workers $(WORKERS)
	$(NEAR) report experiments/demo

# Full suite: brings up the local SLURM cluster (needs root) and requires it; then the demo sweep
# with tiny budgets through SLURM (add -> submit -> wait -> sync -> report --check).
test: setup slurm-up chromium gl
	NEAR_REQUIRE_SLURM=1 NEAR_REQUIRE_CHROMIUM=1 NEAR_REQUIRE_RENDER=1 NEAR_REQUIRE_WARP=1 $(PY) -m pytest -q -ra
	rm -rf experiments/demo-ci
	NAME=demo-ci bash slurm/demo.sh $(CI_DEMO_VARS)

# The demo sweep (full budgets) on the local SLURM cluster instead of the local executor.
demo-slurm: setup slurm-up
	bash slurm/demo.sh

# Everything that does not need the cluster.
test-fast: setup
	NEAR_REQUIRE_WARP=1 $(PY) -m pytest -q -ra -m "not slurm"

# $(call apt_install,TARGET,PACKAGES): Debian packages for TARGET (root), its log in /tmp
apt_install = { [ "$$(id -u)" = 0 ] || { echo "make $(1): needs root (apt-get install $(2))"; exit 1; }; \
  export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/tmp/near-$(1)-apt.log 2>&1 && \
  apt-get install -y -q --no-install-recommends $(2) >>/tmp/near-$(1)-apt.log 2>&1 || \
  { tail -20 /tmp/near-$(1)-apt.log; exit 1; }; }

# Debian's headless Chromium, for the test that opens the report page (EXP/figures/index.html).
chromium:
	@test -x /usr/bin/chromium || $(call apt_install,chromium,chromium fonts-dejavu-core)

# Mesa's EGL (software rendering, no GPU or display needed), for `near render` and its test.
gl:
	@ldconfig -p | grep -q libEGL_mesa || $(call apt_install,gl,libegl1 libegl-mesa0 libgl1-mesa-dri libgl1)

slurm-up:
	bash slurm/up.sh

slurm-down:
	bash slurm/down.sh

# Every benchmark; exit 77 is one that cannot run here (no GPU, no SLURM cluster: it says which).
# The limits benchmark runs with --hold (its full 5,000-job run takes hours on 2 cores: by hand).
bench: setup
	@for b in benchmarks/bench_*.py; do args=; [ $$b = benchmarks/bench_slurm_limits.py ] && args=--hold; \
	  echo "== $$b $$args"; $(PY) $$b $$args; rc=$$?; \
	  [ $$rc = 0 ] || [ $$rc = 77 ] || { echo "$$b exited $$rc"; exit 1; }; done

figures: setup
	$(NEAR) report --all
