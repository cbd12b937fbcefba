#!/usr/bin/env bash
# One call of the humanoid learning check (benchmarks/learning_check_humanoid_gpu.py) on a lent GPU
# machine whose calls last at most 10 minutes: three calls in a row train NEAR and AMP x 3 seeds on
# one of NEAR's motions (4096 envs each, six at once, energy models of 25,000 iterations) and
# evaluate them. The machine is given back after 30 s idle, and the runs' state with it, so the
# calls go in one batch, back to back; each copies what it has so far (log, curves, budget, seed-0
# policies; the table after the last) into $OUT, so that a lost machine still leaves its curves.
#   call 1  carry [.whl]:  bash benchmarks/gpu_wheels_humanoid.sh stash
#   call 2  carry [.whl2, cfg/task/motions/humanoid/amp_humanoid_<motion>.yaml, .../<its clip folder>]:
#           bash benchmarks/device_learning_check.sh first <motion>      (e.g. crane_pose, walk)
#   call 3  bash benchmarks/device_learning_check.sh next <motion>
#   call 4  bash benchmarks/device_learning_check.sh last <motion>       (trains on, then evaluates)
# LC_EXTRA appends arguments (a CPU smoke: LC_EXTRA='--device cpu --envs 64 --frames 1e5 --ncsn-iters 300').
# Their device time: about 560 + 480 + 490 s of the 1800 s a session has; the machine's start counts
# too (up to about 180 s held before the first command runs), and the stash call about 30 s.
set -euo pipefail
phase=${1:?first, next or last} motion=${2:?a motion, e.g. crane_pose}
cd "$(dirname "$0")/.."
case $phase in first|next|last) ;; *) echo "near: unknown phase '$phase' (first, next or last)" >&2; exit 2 ;; esac
if [ "$phase" = first ]; then
  bash benchmarks/gpu_wheels_humanoid.sh install
  mkdir -p /tmp/motions && cp -r cfg/task/motions/humanoid/. /tmp/motions/
fi
if [ ! -d /tmp/site ]; then
  echo "near: a fresh machine: the earlier calls' runs are gone; start again with 'first'" >&2
  exit 9
fi
export PYTHONPATH=/tmp/site:$PWD
case $phase in
  first) deadline=$((545 - SECONDS)) evaluate=--no-eval ;;  # the energy models train in this one
  next) deadline=470 evaluate=--no-eval ;;
  last) deadline=300 evaluate= ;;                                  # evaluation takes about 180 s more
esac
"${PYTHON:-python3}" benchmarks/learning_check_humanoid_gpu.py --motions "/tmp/motions/amp_humanoid_$motion.yaml" \
  --algos NEAR AMP --seeds 3 --envs 4096 --frames 60e6 --ncsn-iters 25000 --parallel 6 --budget 100000 \
  --deadline "$deadline" --combined $evaluate --out /tmp/lc ${LC_EXTRA:-} 2>&1 | grep -v '^Module ' > "/tmp/lc.$phase.log" || true
tail -30 "/tmp/lc.$phase.log"
cp "/tmp/lc.$phase.log" "$OUT/"
(cd /tmp/lc && cp -t "$OUT" curves.csv budget.json ./*_policy.pth; cp -t "$OUT" table.md results.json 2>/dev/null) || true
for run in /tmp/lc/*/NEAR0 /tmp/lc/*/AMP0; do  # the configs `near render` reads beside the policies
  [ -f "$run/config.yaml" ] && cp "$run/config.yaml" "$OUT/$(basename "$(dirname "$run")")_$(basename "$run")_config.yaml"
done
ls "$OUT"
