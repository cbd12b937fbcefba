"""SLURM executor benchmarks on the local cluster (`make slurm-up`).

1. Submit a 1,000-job two-stage sweep (500 ncsn + 500 dependent rl jobs): wall time and the number
   of sbatch calls (counted by an `sbatch` shim on PATH that calls the real one) beside the number
   of jobs. Targets: < 10 s; sbatch calls <= stages x resource groups (here 2).
2. Reconcile 10,000 submitted jobs with squeue + sacct (`sync`): target < 2 s (printed last); also
   the case where all 10,000 changed on the cluster (scancelled outside near) and sync records each.

Arrays are submitted held (sbatch --hold), so nothing runs; everything is scancelled afterwards.
Usage: .venv/bin/python benchmarks/bench_slurm.py [--jobs 1000] [--reconcile 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from near.executors.slurm import cancel, submit, sync  # noqa: E402
from near.executors.slurm_profile import load_profile  # noqa: E402
from near.jobtable import JobSpec, JobTable  # noqa: E402


def make_sweep(exp: Path, n: int, two_stage: bool) -> None:
    """n jobs: n/2 ncsn + n/2 rl each needing its ncsn (two_stage), else n single-stage jobs."""
    cmd = f"{sys.executable} {REPO}/tests/_slurm_jobs/ckpt_job.py --run-dir ${{run_dir}} --steps 1"
    if two_stage:
        half = n // 2
        jobs = [JobSpec(job_id=f"ncsn{i:05d}", stage="ncsn", command=cmd, params={"seed": i}) for i in range(half)]
        jobs += [JobSpec(job_id=f"rl{i:05d}", stage="rl", command=cmd + " --needs ${ncsn.run_dir}/done",
                         params={"seed": i}, deps={"ncsn": f"ncsn{i:05d}"}) for i in range(n - half)]
    else:
        jobs = [JobSpec(job_id=f"rl{i:05d}", stage="rl", command=cmd, params={"seed": i}) for i in range(n)]
    with JobTable.create(exp / "jobs.db", sweep=exp.name) as t:
        t.add(jobs)


#: exit status of a benchmark that cannot run here; `make bench` reports it and goes on
SKIPPED = 77


def require_cluster() -> None:
    """Exit 77 (skipped) with what to do when no SLURM controller answers here."""
    if shutil.which("sbatch") is None or subprocess.run(["scontrol", "ping"], capture_output=True).returncode:
        print("near: no SLURM cluster answers here (`scontrol ping`): skipped; `make slurm-up` starts the local one",
              flush=True)
        sys.exit(SKIPPED)


def sbatch_shim(folder: Path) -> Path:
    """An `sbatch` on PATH that counts its calls into folder/calls and runs the real sbatch."""
    real = shutil.which("sbatch")
    assert real is not None, "require_cluster() first"
    shim = folder / "sbatch"
    shim.write_text(f'#!/bin/sh\necho call >> "{folder}/calls"\nexec {real} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return folder / "calls"


def _all_cancelled_in_sacct(arrays: list[str]) -> bool:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(arrays), "-o", "JobID,State"],
                         capture_output=True, text=True).stdout.splitlines()
    states = [line.split("|") for line in out if "|" in line]
    return ({jid.split("_")[0] for jid, st in states if st.startswith("CANCELLED")} == set(arrays)
            and all(st.startswith("CANCELLED") for _, st in states))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--reconcile", type=int, default=10000)
    args = ap.parse_args()
    require_cluster()
    profile = load_profile(REPO / "slurm" / "local.yaml")
    quiet = lambda *a, **k: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="near-bench-slurm-") as tmp:
        tmp = Path(tmp)
        calls = sbatch_shim(tmp)
        os.environ["PATH"] = f"{tmp}:{os.environ['PATH']}"

        # 1. submission
        exp = tmp / "bench_submit"
        make_sweep(exp, args.jobs, two_stage=True)
        t0 = time.perf_counter()
        res = submit(exp, profile, hold=True, log=quiet)
        submit_s = time.perf_counter() - t0
        n_calls = len(calls.read_text().splitlines())
        stage_groups = len({(a.stage, str(sorted(a.params.items()))) for a in res.arrays})
        assert res.submitted == args.jobs, res
        cancel(exp)

        # 2. reconciliation
        exp2 = tmp / "bench_sync"
        make_sweep(exp2, args.reconcile, two_stage=False)
        t0 = time.perf_counter()
        res2 = submit(exp2, profile, hold=True, log=quiet)
        submit2_s = time.perf_counter() - t0
        assert res2.submitted == args.reconcile
        t0 = time.perf_counter()
        s = sync(exp2, log=quiet)
        sync_s = time.perf_counter() - t0
        assert s.checked == args.reconcile and not s.changes, s
        # every job changed on the cluster behind near's back (scancel): sync records all of them
        arrays = sorted({a.scheduler_id for a in res2.arrays})
        subprocess.run(["scancel", *arrays], check=True)
        end = time.time() + 120
        while time.time() < end and subprocess.run(["squeue", "-h", "-j", ",".join(arrays)], capture_output=True,
                                                   text=True).stdout.strip():
            time.sleep(1)
        # slurmdbd records the cancellations later (a task at a time: longer for more arrays): poll sacct
        end = time.time() + 600
        while time.time() < end and not _all_cancelled_in_sacct(arrays):
            time.sleep(0.5)
        print(f"(sacct has all {len(arrays)} arrays cancelled: {_all_cancelled_in_sacct(arrays)})", flush=True)
        t0 = time.perf_counter()
        s2 = sync(exp2, log=quiet)
        sync2_s = time.perf_counter() - t0
        assert s2.changes.get("cancelled") == args.reconcile, s2
        c = cancel(exp2)

    print(f"submit: {args.jobs} jobs (2 stages x 1 resource group) in {submit_s:.2f} s "
          f"(target < 10 s); sbatch calls {n_calls} for {args.jobs} jobs "
          f"(stage x resource groups = {stage_groups}; ratio calls/jobs = {n_calls / args.jobs:.4f})")
    print(f"(submitting the {args.reconcile} jobs for the reconcile benchmark took {submit2_s:.2f} s, "
          f"{res2.sbatch_calls} sbatch call(s); cancelled {c.cancelled})")
    print(f"reconcile, all {args.reconcile} changed (scancelled outside near -> cancelled): {sync2_s:.2f} s "
          f"with {s2.scheduler_calls} squeue/sacct call(s)")
    print(f"reconcile: {args.reconcile} jobs in {sync_s:.2f} s with {s.scheduler_calls} squeue/sacct call(s) "
          f"(target < 2 s; {sync_s / 2.0:.2f} x target) | all {args.reconcile} changed: {sync2_s:.2f} s "
          f"(target < 2 s; {sync2_s / 2.0:.2f} x target)")


if __name__ == "__main__":
    main()
