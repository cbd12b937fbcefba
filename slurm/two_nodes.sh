#!/usr/bin/env bash
# A second, separate test cluster "near2" with TWO slurmd nodes on this one machine, beside the shared
# one of slurm/up.sh (which it leaves alone): node n1 runs in the host's network namespace, node n2 in
# a network namespace of its own (veth 10.201.0.1 <-> 10.201.0.2), so both slurmd bind the same
# SlurmdPort without a multiple-slurmd build. Own ports (7817/7818), own state under $DIR, no
# accounting database of its own (the shared slurmdbd holds cluster near2), the host's munged. Use it with SLURM_CONF=$DIR/slurm.conf (sbatch, squeue, near).
#   bash slurm/two_nodes.sh up | down          (root; experimental, not part of make test)
set -euo pipefail
DIR=${NEAR2_DIR:-/tmp/near2}
NS=near2
HOST=$(hostname -s)
export SLURM_CONF=$DIR/slurm.conf

down() {
    local pids=() f p
    for f in "$DIR"/slurmd-n1.pid "$DIR"/slurmd-n2.pid "$DIR"/slurmctld.pid; do
        [ -f "$f" ] && pids+=("$(cat "$f")")
        rm -f "$f"
    done
    # job steps of this cluster (their environment names its config), not the shared cluster's
    for p in $(pgrep -f '^slurmstepd' || true); do
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_CONF=$SLURM_CONF" && pids+=("$p")
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 20); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && [ "$(ps -o stat= -p "$p")" != Z ] && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.5
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    ip link del n2h 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
}

up() {
    [ "$(id -u)" = 0 ] || { echo "two_nodes.sh: must run as root" >&2; exit 1; }
    munge -n | unmunge >/dev/null || { echo "two_nodes.sh: munged is not running (run slurm/up.sh)" >&2; exit 1; }
    down
    mkdir -p "$DIR/state" "$DIR/spool-n1" "$DIR/spool-n2"
    ip netns add "$NS"
    ip link add n2h type veth peer name n2c
    ip link set n2c netns "$NS"
    ip addr add 10.201.0.1/24 dev n2h
    ip link set n2h up
    ip netns exec "$NS" ip addr add 10.201.0.2/24 dev n2c
    ip netns exec "$NS" ip link set n2c up
    ip netns exec "$NS" ip link set lo up
    cat >"$SLURM_CONF" <<EOF
ClusterName=near2
SlurmctldHost=$HOST(10.201.0.1)
SlurmctldPort=7817
SlurmdPort=7818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool-%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2
MinJobAge=300
ReturnToService=2
MpiDefault=none
NodeName=n1 NodeHostname=$HOST NodeAddr=10.201.0.1 CPUs=1 RealMemory=1000 State=UNKNOWN
NodeName=n2 NodeHostname=$HOST NodeAddr=10.201.0.2 CPUs=1 RealMemory=1000 State=UNKNOWN
PartitionName=two Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
    # sacct answers through the shared slurmdbd, where near2 is a cluster of its own
    if [ -z "$(sacctmgr -n -P show cluster near2 format=cluster)" ]; then
        sacctmgr -i add cluster near2 >/dev/null
    fi
    /usr/sbin/slurmctld
    for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.3; done
    /usr/sbin/slurmd -N n1
    # nsenter, not `ip netns exec`: that remounts /sys, hiding /sys/fs/cgroup, and slurmd stops
    nsenter --net=/run/netns/"$NS" /usr/sbin/slurmd -N n2
    for _ in $(seq 100); do
        [ "$(sinfo -h -o %t | sort -u | tr '\n' ' ')" = "idle " ] && break
        scontrol update nodename=n1,n2 state=resume >/dev/null 2>&1 || true
        sleep 0.5
    done
    sinfo -N
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
