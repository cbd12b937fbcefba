#!/usr/bin/env bash
# Stop the local test cluster started by slurm/up.sh: slurmd, slurmctld, slurmdbd, mariadb, munged.
# Idempotent (stopping a stopped cluster is a no-op). Stops each daemon by its pid file only.
# State (job accounting, slurmctld state) is kept; `slurm/up.sh` brings the cluster back.
set -uo pipefail
RUN=/run/slurm
T0=$(date +%s)
say() { echo "[slurm-down $(( $(date +%s) - T0 ))s] $*"; }

stop_pidfile() {  # stop_pidfile NAME PIDFILE: SIGTERM, wait up to 20 s, then SIGKILL
    local name=$1 pidf=$2 pid
    [ -f "$pidf" ] || return 0
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping $name (pid $pid)"
        kill "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && { say "$name did not stop: SIGKILL"; kill -9 "$pid"; }
    fi
    rm -f "$pidf"
}

stop_pidfile slurmd "$RUN/slurmd.pid"
stop_pidfile slurmctld "$RUN/slurmctld.pid"
stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
if command -v mysqladmin >/dev/null && mysqladmin --protocol=socket ping >/dev/null 2>&1; then
    say "stopping mariadb"
    mysqladmin --protocol=socket shutdown
fi
stop_pidfile munged /run/munge/munged.pid
say "cluster down"
