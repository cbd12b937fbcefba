"""What runs on the SLURM node: one job of the table, with checkpoint/requeue.

submitit pickles a :class:`NodeJob` and calls it inside the allocation. It marks the job running
in the job table, starts the job's command in its own process group (the run dir layout of the
shared runner: ``command.sh``, ``stdout.log``, ``stderr.log``) and waits. The ways out:

- the command exits 0 -> done. Non-zero -> crashed: back to pending (the next ``submit`` re-dispatches
  it) until it crashed ``max_attempts`` times, then failed; the SLURM job fails too, so SLURM removes
  its ``afterok``/``aftercorr`` dependents instead of leaving them pending forever.
- SIGTERM from SLURM (``scancel``, ``scontrol requeue``, preemption): forwarded to the command, which
  checkpoints and exits 3; the job goes back to queued. A requeued job runs again (a new attempt)
  and resumes from the checkpoint; a cancelled one is recorded cancelled by the next ``sync``.
- the time limit nears: at the job's own deadline (``time limit - margin``; SLURM's ``--signal=USR2``
  warning comes up to 60 s early, so an early one is ignored) submitit's USR2 handler calls
  :meth:`NodeJob.checkpoint`, which SIGTERMs the command, waits for its whole process group (the
  checkpoint is on disk), records "timeout: checkpointed and requeued" with attempts+1; submitit
  then runs ``scontrol requeue`` and the next run resumes from the checkpoint (same run dir).
- the node dies: nothing is written here; ``near sweep sync`` sees it in sacct.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Iterable

import submitit

from near.executors import runner
from near.jobtable import (
    ACTIVE_STATES, DONE, FAILED, PENDING, QUEUED, RUNNING, Change, Event, JobRecord, JobTable,
)

INTERRUPTED_EXIT = runner.EXIT_INTERRUPTED  # near's trainers: "checkpointed after SIGTERM/SIGUSR2"
RETRY_PREFIXES = ("crashed", "lost on the cluster")  # reasons of the losses counted against max_attempts
TERM_GRACE_S = 60.0
INTERRUPTED = "interrupted by the scheduler (SIGTERM)"   # wait this long for the checkpoint before SIGKILL


def scheduler_id_from_env() -> str | None:
    """This allocation's id as near records it: ``ARRAY_TASK`` for array tasks, else the job id."""
    arr, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if arr and task:
        return f"{arr}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def retry_or_fail(table: JobTable, job: JobRecord, why: str, exit_code: int | None,
                  prefix: str = "lost on the cluster: ") -> str | None:
    """A lost attempt (crash, dead node, time-out without requeue): back to pending, so that the
    next ``submit`` re-dispatches it (resuming from its checkpoint), unless the job was lost
    ``max_attempts`` times already -> failed. Requeues after a checkpoint do not count, only these
    losses (the table's own ``retry_or_fail`` counts every attempt; on SLURM each requeue is one).
    Built on ``JobTable.transition``."""
    ch = retry_change(job, why, exit_code, table.history(job.job_id), prefix)
    ok = table.transition(ch.job_id, ch.to_state, expect=ch.expect, exit_code=ch.exit_code, reason=ch.reason)
    return ch.to_state if ok else None


def retry_change(job: JobRecord, why: str, exit_code: int | None, events: Iterable[Event],
                 prefix: str = "lost on the cluster: ") -> Change:
    """The compare-and-set :func:`retry_or_fail` applies, given the job's recorded ``events``
    (so that a reconcile can apply many of them in one transaction)."""
    lost = 1 + sum(1 for e in events if e.to_state in (PENDING, FAILED)
                   and (e.reason or "").startswith(RETRY_PREFIXES))
    why = prefix + why
    if lost >= job.max_attempts:
        return Change(job.job_id, FAILED, expect=ACTIVE_STATES, exit_code=exit_code,
                      reason=f"{why} (lost {lost} of max_attempts {job.max_attempts})")
    return Change(job.job_id, PENDING, expect=ACTIVE_STATES, exit_code=exit_code,
                  reason=f"{why}; will be resubmitted ({lost}/{job.max_attempts})")


class JobFailed(RuntimeError):
    """Raised on the node when the job's command failed, so that the SLURM job fails too
    (``afterok`` dependents are then removed by ``kill-on-invalid-dep`` instead of running)."""


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
                raise JobFailed(f"near job {self.job_id}: dependencies not done: {bad}")
            # a restart after a scheduler interruption (requeue, preemption) is a new attempt
            charge = int(job.state == QUEUED and (job.reason or "").startswith(INTERRUPTED))
            attempt = job.attempts + charge
            table.transition(self.job_id, RUNNING, expect=(QUEUED, RUNNING), scheduler_id=sid, charge=charge,
                             detail=f"slurm {sid} on {os.uname().nodename}, attempt {attempt}")
            command = job.command
            table.set_command(self.job_id, command)
        finally:
            table.close()

        signal.signal(signal.SIGTERM, self._on_term)
        print(f"near: job {self.job_id} attempt {attempt} (slurm {sid}): {command}", flush=True)
        self._proc = self._launch(job)
        deadline = start + self.time_limit_s - self.margin_s
        self._deadline = deadline
        submitit_handler = signal.getsignal(signal.SIGUSR2)

        def on_usr2(signum: int, frame: object) -> None:
            # SLURM's --signal warning may come up to a minute early; our own deadline is exact, so an
            # early warning is ignored (it only concerns the time limit: preemption sends SIGTERM)
            if time.time() >= deadline - 1 or not callable(submitit_handler):
                submitit_handler(signum, frame)
            else:
                print(f"near: early time-limit warning ignored ({deadline - time.time():.0f} s before "
                      "this job's own checkpoint deadline)", flush=True)

        signal.signal(signal.SIGUSR2, on_usr2)
        warned = False
        restarts = 0
        while True:
            code = self._proc.poll()
            if code == INTERRUPTED_EXIT and not self._external_term and not warned and restarts < 20:
                # the command checkpointed on a signal meant for us (SLURM's early USR2 reaches every
                # process of the step): time is left, so resume it right here from its checkpoint
                restarts += 1
                print(f"near: job {self.job_id} checkpointed early; resuming it in place", flush=True)
                self._proc = self._launch(job)
                continue
            if code is not None:
                self._wait_group()  # the command's children may still be writing their checkpoint
                break
            if not warned and time.time() >= deadline:
                # our own time-limit warning: submitit's USR2 handler -> checkpoint() -> scontrol requeue
                warned = True
                if callable(submitit_handler):
                    submitit_handler(signal.SIGUSR2, None)
            time.sleep(0.5)
        outcome = self._finish(code, sid)
        if outcome in (FAILED, PENDING):
            # fail the SLURM job too, so that SLURM removes its afterok/aftercorr dependents
            raise JobFailed(f"near job {self.job_id}: command exited with {code} (table: {outcome})")
        return outcome

    def _mine(self, table: JobTable) -> bool:
        """False if the job was resubmitted under another scheduler id since this run started: then
        this (stale) run must not overwrite what the current one records."""
        current = table.get(self.job_id).scheduler_id
        sid = scheduler_id_from_env()
        if current and sid and current != sid:
            print(f"near: job {self.job_id} now belongs to slurm {current}, not {sid}; not recording", flush=True)
            return False
        return True

    def _launch(self, job: JobRecord) -> subprocess.Popen:
        """Start the job's command in its own process group, output appended to the run dir's
        stdout.log/stderr.log, command.sh written for reproduction (the shared runner's layout).

        Not through the runner's supervisor: there, ``bash command.sh`` dies at once on SIGTERM (143)
        and ``runner.stop`` then SIGKILLs the group while the trainer is still checkpointing. Here
        ``bash -c`` execs a simple command, and stopping waits for the whole group to exit.
        SIGUSR2 is ignored by what we start (the disposition survives exec), so SLURM's early
        time-limit warning, which reaches every process of the step, does not kill a shell;
        a trainer that installs its own handler checkpoints and is resumed in place.
        """
        run_dir = runner.prepare(job)
        with open(run_dir / runner.STDOUT_FILE, "ab") as out, open(run_dir / runner.STDERR_FILE, "ab") as err:
            out.write(f"=== near: job {job.job_id} on slurm {scheduler_id_from_env()} "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
            out.flush()
            prev = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
            try:
                return subprocess.Popen(["bash", "-c", job.command], cwd=runner.job_cwd(job),
                                        stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                                        env=runner.job_env(job))
            finally:
                signal.signal(signal.SIGUSR2, prev)

    def _group_alive(self) -> bool:
        self._proc.poll()  # reap the leader: a zombie would keep the group "alive"
        try:
            os.killpg(self._proc.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def _wait_group(self, grace_s: float = TERM_GRACE_S) -> None:
        """Wait until every process of the command's group exited; SIGKILL what is left after grace_s."""
        end = time.time() + grace_s
        while self._group_alive() and time.time() < end:
            time.sleep(0.2)
        if self._group_alive():
            runner.signal_group(self._proc, signal.SIGKILL)

    def _on_term(self, signum: int, frame: object) -> None:
        """SIGTERM from SLURM (scancel, scontrol requeue, preemption): pass it on, let it checkpoint."""
        self._external_term = True
        if self._proc is not None:
            runner.signal_group(self._proc, signal.SIGTERM)

    def _stop_child(self) -> int | None:
        """SIGTERM the command's group, wait for all of it (checkpoint written), then its status."""
        if self._proc is None:
            return None
        if self._proc.poll() is None or self._group_alive():
            runner.signal_group(self._proc, signal.SIGTERM)
            self._wait_group()
        code = self._proc.wait()
        # a shell killed by the SIGTERM while its child checkpointed: the child's exit is not known
        return INTERRUPTED_EXIT if code in (-signal.SIGTERM, 128 + signal.SIGTERM) else code

    def _finish(self, code: int, sid: str | None) -> str:
        with JobTable.open(self.exp_dir) as table:
            if not self._mine(table):
                return "superseded"
            if code == 0:
                table.transition(self.job_id, DONE, exit_code=0, expect=ACTIVE_STATES)
                return DONE
            if self._external_term and code in (INTERRUPTED_EXIT, -signal.SIGTERM, 128 + signal.SIGTERM):
                # scancel, scontrol requeue or preemption: slurmctld only says COMPLETING now. A requeued
                # job runs again (that start counts the attempt) and resumes from the checkpoint; a
                # cancelled one is recorded cancelled by the next `sync` (sacct: CANCELLED).
                table.transition(self.job_id, QUEUED, exit_code=code, expect=ACTIVE_STATES,
                                 reason=f"{INTERRUPTED}; checkpointed")
                return QUEUED
            why = "killed by SIGKILL" if code in (-9, 137) else f"exit code {code}"
            return retry_or_fail(table, table.get(self.job_id), f"crashed ({why})", code, prefix="")

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit on USR2 (time limit near, or preemption warning)."""
        # SLURM's warning signal may come up to 60 s early: near the limit it is a time-out, else preemption
        kind = "timeout" if time.time() >= self._deadline - 65 else "preempted"
        code = self._stop_child()
        with JobTable.open(self.exp_dir) as table:
            job = table.get(self.job_id)
            if not self._mine(table):
                return None
            if code == 0:
                table.transition(self.job_id, DONE, exit_code=0, expect=ACTIVE_STATES)
                return None  # finished just in time: nothing to requeue
            if code not in (INTERRUPTED_EXIT, None):
                retry_or_fail(table, job, f"crashed (exit code {code} while checkpointing)", code, prefix="")
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
