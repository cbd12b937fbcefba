#!/usr/bin/env bash
# The Python packages the humanoid's GPU benchmarks need that the bare GPU machine lacks (its image
# has torch, numpy, scipy, pyyaml, tensorboard, cloudpickle, psutil), at the versions `make setup`
# installed here, packed for the device tool, whose calls carry at most 64 MiB each:
#   .whl/   the wheels (pure Python, or x86-64 CPython 3.12) and the first half of warp
#   .whl2/  the second half of warp
# warp-lang's wheel is 149 MB; without its CPU compiler (warp-clang.so, unused on a GPU) and its
# examples, as tar.xz -9, it is 80 MB, split in two. Both folders are git-ignored (.git/info/exclude
# for .whl2). A device call carries paths of the checkout the session runs in: from a helper's clone,
# copy .whl (with this clone's code beside it) into that checkout's git-ignored .whl/ first.
# Use, from the repo root:
#   here:      bash benchmarks/gpu_wheels_humanoid.sh
#   device 1:  carry [.whl]:  bash benchmarks/gpu_wheels_humanoid.sh stash     (keeps .whl in /tmp/stash)
#   device 2:  carry [.whl2, ...], at once (the machine stays warm 30 s):
#              bash benchmarks/gpu_wheels_humanoid.sh install && export PYTHONPATH=/tmp/site:$PWD
#   optional:  `... savecache` writes the machine's Warp kernel cache to $OUT; copied to
#              .whl2/warpcache.tar.xz it is restored by `install` (13 MB: fits beside .whl2)
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="rl-games hydra-core omegaconf antlr4-python3-runtime submitit gymnasium farama-notifications
  mujoco mujoco-core mujoco-warp tensorboardX setproctitle absl-py etils glfw pyopengl"
case "${1:-}" in
  stash)
    mkdir -p /tmp/stash && cp .whl/* /tmp/stash/ && ls /tmp/stash | wc -l
    exit 0 ;;
  install)
    [ -d .whl ] && cp -n .whl/* /tmp/stash/ 2>/dev/null || true
    cp .whl2/* /tmp/stash/
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/stash/*.whl
    cat /tmp/stash/warp.tar.xz.* | tar xJf - -C /tmp/site
    # a kernel cache saved from an earlier machine (optional) spares minutes of compilation
    if [ -f .whl2/warpcache.tar.xz ]; then mkdir -p ~/.cache/warp && tar xJf .whl2/warpcache.tar.xz -C ~/.cache/warp; fi
    exit 0 ;;
  savecache)  # into $OUT, to copy into .whl2/ here (keep it under the 64 MiB a call carries)
    tar cf - -C ~/.cache/warp . | xz -1 -T0 > "$OUT/warpcache.tar.xz" && ls -la "$OUT/warpcache.tar.xz"
    exit 0 ;;
esac
mkdir -p .whl .whl2
for pkg in $PACKAGES; do
  version=$(.venv/bin/python -m pip show "$pkg" 2>/dev/null | awk '/^Version:/ {print $2}')
  [ -n "$version" ] || { echo "skip $pkg (not installed here)"; continue; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$pkg==$version" \
    || .venv/bin/python -m pip wheel -q --no-deps -w .whl "$pkg==$version"  # pure-Python sdists (antlr4)
done
warp=$(.venv/bin/python -m pip show warp-lang | awk '/^Version:/ {print $2}')
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d "$tmp" "warp-lang==$warp"
(cd "$tmp" && mkdir site && cd site && unzip -q ../warp_lang-*.whl && rm -rf warp/examples warp/bin/warp-clang.so \
  && tar cf - . | xz -9 -T0 > ../warp.tar.xz)
split -n 2 -d "$tmp/warp.tar.xz" "$tmp/warp.tar.xz."
mv "$tmp/warp.tar.xz.00" .whl/ && mv "$tmp/warp.tar.xz.01" .whl2/
rm -rf "$tmp"
du -sh .whl .whl2
