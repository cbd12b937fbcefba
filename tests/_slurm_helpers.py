"""Helpers of the SLURM tests: a job table of tiny checkpointing jobs, CLI calls, polling."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from near.jobtable import JobSpec, JobTable

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "tests" / "_slurm_jobs" / "ckpt_job.py"
NEAR = [sys.executable, "-m", "near"]


def cluster_up() -> str | None:
    """None if the local cluster answers (sinfo shows a usable node, sacct works), else why not."""
    if shutil.which("sbatch") is None:
        return "sbatch not installed (run `make slurm-up`)"
    try:
        s = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
        a = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as err:
        return f"cluster does not answer: {err}"
    if s.returncode or not any(t in s.stdout for t in ("idle", "mix", "alloc")):
        return f"no usable node: {s.stdout.strip()} {s.stderr.strip()}"
    if a.returncode:
        return f"sacct does not answer: {a.stderr.strip()}"
    return None


def require_cluster() -> None:
    """Skip without a cluster, or fail when NEAR_REQUIRE_SLURM=1 (make test, CI)."""
    why = cluster_up()
    if why:
        if os.environ.get("NEAR_REQUIRE_SLURM") == "1":
            pytest.fail(f"NEAR_REQUIRE_SLURM=1 but the local SLURM cluster is not up: {why}")
        pytest.skip(f"local SLURM cluster not up: {why}")


def job_cmd(steps: int = 4, step_s: float = 0.5, fail: bool = False, needs: str | None = None) -> str:
    """Command template of the checkpointing test job."""
    cmd = f"{sys.executable} {JOB} --run-dir ${{run_dir}} --steps {steps} --step-s {step_s}"
    if fail:
        cmd += " --fail"
    if needs:
        cmd += f" --needs ${{{needs}.run_dir}}/done"
    return cmd


def make_sweep(exp: Path, jobs: list[JobSpec]) -> Path:
    """A job table with these jobs at ``exp/jobs.db`` (their checkpoint declared: the test job's)."""
    for j in jobs:
        j.resources.setdefault("checkpoint", "ckpt.json")
    with JobTable.create(exp / "jobs.db", sweep=exp.name) as t:
        t.add(jobs)
    return exp


def near(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the near CLI in a subprocess."""
    out = subprocess.run([*NEAR, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300)
    if check and out.returncode:
        raise AssertionError(f"near {' '.join(map(str, args))} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def jobs(exp: Path) -> dict:
    """job_id -> JobRecord."""
    with JobTable.open(exp) as t:
        return {j.job_id: j for j in t.jobs()}


def wait_until(pred, timeout: float, what: str, exp: Path | None = None, every: float = 1.0, sync: bool = False):
    """Poll ``pred()`` (running ``near sweep sync`` first when ``sync``) until truthy or fail."""
    end = time.time() + timeout
    while True:
        if sync and exp is not None:
            near("sweep", "sync", exp)
        got = pred()
        if got:
            return got
        if time.time() > end:
            state = {j: (r.state, r.reason, r.scheduler_id) for j, r in jobs(exp).items()} if exp else ""
            sq = subprocess.run(["squeue"], capture_output=True, text=True).stdout
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{state}\n{sq}")
        time.sleep(every)


def steps_logged(run_dir: str) -> list[int]:
    """Step numbers the test job logged as finished, in order."""
    p = Path(run_dir) / "progress.log"
    if not p.exists():
        return []
    return [int(line.split()[1]) for line in p.read_text().splitlines() if line.startswith("step ")]


def starts_logged(run_dir: str) -> list[int]:
    """The step each run of the job started at."""
    p = Path(run_dir) / "progress.log"
    if not p.exists():
        return []
    return [int(line.split()[-3]) for line in p.read_text().splitlines() if line.startswith("start attempt")]


def squeue_ids(name: str) -> list[str]:
    """Scheduler ids (one per array task) of jobs named ``name`` still known to slurmctld."""
    out = subprocess.run(["squeue", "-h", "-r", "-n", name, "-o", "%i|%T"], capture_output=True, text=True)
    return [line.split("|")[0] for line in out.stdout.splitlines() if line.strip()]
