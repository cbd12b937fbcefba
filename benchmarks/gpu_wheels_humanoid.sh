#!/usr/bin/env bash
# The Python packages the humanoid's GPU benchmarks need that a bare GPU machine lacks (its image
# has torch, numpy, scipy, pyyaml, tensorboard, cloudpickle), as x86-64 wheels in .whl/ (git-ignored),
# at the versions `make setup` installed here. Run here once; then name .whl in the device call's
# `carry` and start its command with:
#   bash benchmarks/gpu_wheels_humanoid.sh install && export PYTHONPATH=/tmp/site:$PWD
# Wheels over 16 MiB are kept as split xz parts (name.whl.xz.00, .01, ...), reassembled on install.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="rl-games hydra-core omegaconf antlr4-python3-runtime submitit gymnasium farama-notifications
  mujoco mujoco-core mujoco-warp warp-lang tensorboardX setproctitle absl-py etils glfw pyopengl"
if [ "${1:-}" = install ]; then
  mkdir -p /tmp/whl
  cp .whl/*.whl /tmp/whl/ 2>/dev/null || true
  for first in .whl/*.whl.xz.00; do
    [ -e "$first" ] || continue
    name=$(basename "${first%.xz.00}")
    cat "${first%.00}".* | xz -d > "/tmp/whl/$name"
  done
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/whl/*.whl
  exit 0
fi
mkdir -p .whl
for pkg in $PACKAGES; do
  version=$(.venv/bin/python -m pip show "$pkg" 2>/dev/null | awk '/^Version:/ {print $2}')
  [ -n "$version" ] || { echo "skip $pkg (not installed here)"; continue; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$pkg==$version" \
    || .venv/bin/python -m pip wheel -q --no-deps -w .whl "$pkg==$version"  # pure-Python sdists (antlr4)
done
for whl in .whl/*.whl; do
  if [ "$(stat -c %s "$whl")" -gt 16000000 ]; then
    xz -T0 -6 -c "$whl" | split -b 15M -d - "$whl.xz."
    rm "$whl"
  fi
done
du -sh .whl; ls -la .whl
