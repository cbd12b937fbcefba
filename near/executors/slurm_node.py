"""What runs on the SLURM node: one job of the table, with checkpoint/requeue.

submitit pickles a :class:`NodeJob` and calls it inside the allocation. It marks the job running
in the job table, starts the job's command in its own process group and waits. Three ways out:

- the command exits: 0 -> done; 3 after a SIGTERM from outside (scancel, ``scontrol requeue``,
  preemption) -> back to queued (the scheduler decides: a requeued job runs again, a cancelled one
  is recorded cancelled by the node or at the next ``sync``); anything else -> failed.
- the time limit nears: SLURM's ``--signal=USR2`` (up to 60 s early or late) or the job's own
  deadline (``time limit - margin``) raise USR2; submitit's handler calls :meth:`NodeJob.checkpoint`,
  which forwards SIGTERM to the command (near's trainers checkpoint and exit 3), records
  "timeout: checkpointed and requeued" with attempts+1, and submitit runs ``scontrol requeue``.
  The next run resumes from the checkpoint (same run dir, same command).
- the node dies: nothing is written here; ``near sweep sync`` sees it in sacct.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import submitit

from near.jobtable import (
    ACTIVE_STATES, CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobTable,
)

INTERRUPTED_EXIT = 3  # near's trainers: "checkpointed after SIGTERM/SIGUSR2, resumable"
TERM_GRACE_S = 60.0   # wait this long for the checkpoint before SIGKILL


def scheduler_id_from_env() -> str | None:
    """This allocation's id as near records it: ``ARRAY_TASK`` for array tasks, else the job id."""
    arr, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if arr and task:
        return f"{arr}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _scheduler_state(scheduler_id: str) -> str:
    """The job's state as slurmctld sees it now ("" if unknown): tells a requeue from a cancel."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", scheduler_id, "-o", "%T"], capture_output=True,
                             text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        return ""


class NodeJob(submitit.helpers.Checkpointable):
    """Run job ``job_id`` of the table in ``exp_dir`` once; checkpoint and requeue near the limit."""

    def __init__(self, exp_dir: str, job_id: str, time_limit_s: float, margin_s: float,
                 max_requeues: int = 50):
        self.exp_dir = exp_dir
        self.job_id = job_id
        self.time_limit_s = time_limit_s
        self.margin_s = margin_s
        self.max_requeues = max_requeues
        self._proc: subprocess.Popen | None = None
        self._checkpointing = False
        self._external_term = False
        self._deadline = float("inf")

    # submitit pickles the object again at checkpoint time: keep live handles out of the pickle
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_proc=None, _checkpointing=False, _external_term=False, _deadline=float("inf"))
        return state

    def __call__(self) -> str:
        start = time.time()
        sid = scheduler_id_from_env()
        table = JobTable.open(self.exp_dir)
        try:
            job = table.get(self.job_id)
            if job.state not in ACTIVE_STATES:
                # cancelled/done/blocked in the table after submission: do not run it
                print(f"near: job {self.job_id} is {job.state} in the table; not running it", flush=True)
                return job.state
            bad = {ref: dep for ref, dep in job.deps.items() if table.get(dep).state != DONE}
            if bad:
                # afterok should make this impossible; never train on a missing checkpoint
                table.transition(self.job_id, "blocked", expect=ACTIVE_STATES,
                                 reason=f"dependency not done at start: {bad}")
                return "blocked"
            attempt = job.attempts
            table.transition(self.job_id, RUNNING, expect=(QUEUED, RUNNING), scheduler_id=sid,
                             detail=f"slurm {sid} on {os.uname().nodename}, attempt {attempt}")
            command = job.command
            run_dir = Path(job.run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            if job.command != (job.command_template or ""):
                table.set_command(self.job_id, command)
        finally:
            table.close()

        signal.signal(signal.SIGTERM, self._on_term)
        print(f"near: job {self.job_id} attempt {attempt} (slurm {sid}): {command}", flush=True)
        self._proc = subprocess.Popen(["bash", "-c", command], cwd=job.workdir or str(run_dir),
                                      start_new_session=True)
        deadline = start + self.time_limit_s - self.margin_s
        self._deadline = deadline
        warned = False
        while True:
            code = self._proc.poll()
            if code is not None:
                break
            if not warned and time.time() >= deadline:
                # our own time-limit warning; goes through submitit's USR2 handler -> checkpoint()
                warned = True
                os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.5)
        return self._finish(code, sid)

    def _on_term(self, signum: int, frame: object) -> None:
        """SIGTERM from SLURM (scancel, scontrol requeue, preemption): pass it on, let it checkpoint."""
        self._external_term = True
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _stop_child(self) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            end = time.time() + TERM_GRACE_S
            while proc.poll() is None and time.time() < end:
                time.sleep(0.2)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def _finish(self, code: int, sid: str | None) -> str:
        with JobTable.open(self.exp_dir) as table:
            if code == 0:
                table.transition(self.job_id, DONE, exit_code=0, expect=ACTIVE_STATES)
                return DONE
            if code == INTERRUPTED_EXIT and self._external_term:
                st = _scheduler_state(sid) if sid else ""
                if st.startswith("CANCEL"):
                    table.transition(self.job_id, CANCELLED, exit_code=code, expect=ACTIVE_STATES,
                                     reason="cancelled on the cluster (scancel); checkpoint kept")
                    return CANCELLED
                # requeue or preemption: SLURM runs it again; the next run resumes from the checkpoint
                table.transition(self.job_id, QUEUED, exit_code=code, expect=ACTIVE_STATES, charge=1,
                                 reason=f"interrupted by the scheduler ({st or 'SIGTERM'}); checkpointed")
                return QUEUED
            why = "killed by SIGKILL" if code in (-9, 137) else f"exit code {code}"
            table.transition(self.job_id, FAILED, exit_code=code, expect=ACTIVE_STATES, reason=why)
            return FAILED

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit on USR2 (time limit near, or preemption warning)."""
        # SLURM's warning signal may come up to 60 s early: near the limit it is a time-out, else preemption
        kind = "timeout" if time.time() >= self._deadline - 65 else "preempted"
        code = self._stop_child()
        with JobTable.open(self.exp_dir) as table:
            job = table.get(self.job_id)
            if code == 0:
                table.transition(self.job_id, DONE, exit_code=0, expect=ACTIVE_STATES)
                return None  # finished just in time: nothing to requeue
            if code not in (INTERRUPTED_EXIT, None):
                table.transition(self.job_id, FAILED, exit_code=code, expect=ACTIVE_STATES,
                                 reason=f"exit code {code} while checkpointing at the time limit")
                return None
            requeues = sum(1 for e in table.history(self.job_id)
                           if e.reason and ": checkpointed and requeued" in e.reason)
            if requeues >= self.max_requeues:
                table.transition(self.job_id, FAILED, exit_code=code, expect=ACTIVE_STATES,
                                 reason=f"{kind}: gave up after {requeues} requeues")
                return None
            table.transition(
                self.job_id, QUEUED, exit_code=code, expect=ACTIVE_STATES, charge=1,
                reason=f"{kind}: checkpointed and requeued (requeue {requeues + 1}, attempt {job.attempts + 1})",
            )
        self._checkpointing = True
        return submitit.helpers.DelayedSubmission(self)


def main() -> None:  # pragma: no cover - manual debugging aid
    """``python -m near.executors.slurm_node EXP JOB_ID``: run one job here, outside SLURM."""
    print(NodeJob(sys.argv[1], sys.argv[2], 10 ** 9, 0)())


if __name__ == "__main__":
    main()
