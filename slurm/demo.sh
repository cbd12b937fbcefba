#!/usr/bin/env bash
# The demo sweep on the local SLURM cluster, end to end: add -> submit -> wait -> sync -> report,
# then check that every job is done and every promised figure and table exists and is non-empty.
#
#   bash slurm/demo.sh                      # the full demo budgets (sweeps/demo.yaml)
#   bash slurm/demo.sh --var rl_iters=3     # any `near sweep add` options (CI: tiny budgets)
#
# NAME (default demo-slurm) names the sweep folder under experiments/; PROFILE the cluster profile.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-demo-slurm}
PROFILE=${PROFILE:-slurm/local.yaml}
NEAR=${NEAR:-.venv/bin/near}
EXP=experiments/$NAME
START=$(date +%Y-%m-%dT%H:%M:%S)
say() { echo "[demo-slurm $(date +%T)] $*"; }

say "add sweeps/demo.yaml as $EXP $*"
$NEAR sweep add sweeps/demo.yaml --name "$NAME" "$@"
say "submit to SLURM ($PROFILE)"
$NEAR sweep submit "$EXP" --profile "$PROFILE"
squeue -o "%.18i %.24j %.8T %.10M %R" | head -20
say "wait for every job (syncing with squeue/sacct)"
wait_rc=0
$NEAR sweep wait "$EXP" --profile "$PROFILE" --poll 5 --timeout "${TIMEOUT:-2400}" || wait_rc=$?
$NEAR sweep sync "$EXP"
$NEAR sweep status "$EXP"
if [ "$wait_rc" -ne 0 ]; then
  say "FAILED: not every job is done"; exit 1
fi
say "sacct of the sweep's arrays"
sacct -X -n -o JobID%16,JobName%24,State%12,ExitCode,Elapsed -S "$START" | grep "near-$NAME-" | head -40 || true
say "report"
$NEAR report "$EXP" --spec plotting/demo.yaml --check
say "done: figures in $EXP/figures"
