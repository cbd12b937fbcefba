"""What runs on the SLURM node: one job, with checkpoint/requeue, reporting through outcome files.

submitit pickles a :class:`NodeJob` (with the job's :class:`~near.executors.runner.Task`: command,
run dir, workdir) and calls it inside the allocation. The node never opens the job table (SQLite
over NFS/Lustre is not safe, and hundreds of tasks would contend for its lock): it reports each
event of the attempt as an outcome file under ``<run_dir>/outcomes/``, which ``near sweep sync`` /
``wait`` fold into the table (``near.executors.base`` holds the policy). The ways out:

- started: a ``started`` outcome (scheduler id, host) before the command runs;
- the command exits 0 -> ``finished`` 0 (done). Non-zero -> ``finished`` with the code; the SLURM
  job fails too, so SLURM removes its ``afterok``/``aftercorr`` dependents instead of leaving them
  pending forever (the controller retries crashes up to ``max_attempts``);
- SIGTERM from SLURM (``scancel``, ``scontrol requeue``, preemption): forwarded to the command, which
  checkpoints and exits 3 -> ``requeued``. A requeued job runs again (a new attempt) and resumes
  from the checkpoint; a cancelled one is recorded cancelled by the next ``sync`` (sacct);
- the time limit nears: at the job's own deadline (``time limit - margin``; SLURM's ``--signal=USR2``
  warning comes up to 60 s early, so an early one is ignored) submitit's USR2 handler calls
  :meth:`NodeJob.checkpoint`, which SIGTERMs the command, waits for its whole process group (the
  checkpoint is on disk) and writes ``requeued`` ("timeout: checkpointed and requeued"); submitit
  then runs ``scontrol requeue`` and the next run resumes from the checkpoint (same run dir);
- the node dies: nothing is written here; ``near sweep sync`` sees it in sacct.

This module imports no job-table code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import submitit

from near.executors import runner
from near.executors.outcomes import FINISHED, GAVE_UP, REQUEUED, STARTED, Outcome, checkpoint_progress, write_outcome
from near.exitcodes import EXIT_INTERRUPTED as INTERRUPTED_EXIT

TERM_GRACE_S = 60.0    # wait this long for the checkpoint before SIGKILL
INTERRUPTED = "interrupted by the scheduler (SIGTERM)"


def scheduler_id_from_env() -> str | None:
    """This allocation's id as near records it: ``ARRAY_TASK`` for array tasks, else the job id."""
    arr, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if arr and task:
        return f"{arr}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the command's process group (ignore it if already gone)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class JobFailed(RuntimeError):
    """Raised on the node when the job's command failed, so that the SLURM job fails too
    (``afterok`` dependents are then removed by ``kill-on-invalid-dep`` instead of running)."""


class NodeJob(submitit.helpers.Checkpointable):
    """Run ``task`` (job ``job_id`` of the sweep in ``exp_dir``) once; checkpoint and requeue near the
    limit. ``requeues`` (time-limit requeues so far) travels in the pickle submitit writes again
    at each checkpoint."""

    def __init__(self, exp_dir: str, job_id: str, time_limit_s: float, margin_s: float,
                 max_requeues: int = 50, *, task: runner.Task):
        self.exp_dir = exp_dir
        self.job_id = job_id
        self.time_limit_s = time_limit_s
        self.margin_s = margin_s
        self.max_requeues = max_requeues
        self.task = task
        self.requeues = 0
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
        job = self.task
        self._report(STARTED)
        command = job.command
        signal.signal(signal.SIGTERM, self._on_term)
        print(f"near: job {self.job_id} (slurm {sid} on {os.uname().nodename}): {command}", flush=True)
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
        outcome = self._finish(code)
        if outcome == FINISHED and code != 0:
            # fail the SLURM job too, so that SLURM removes its afterok/aftercorr dependents
            raise JobFailed(f"near job {self.job_id}: command exited with {code}")
        return outcome

    def _report(self, kind: str, exit_code: int | None = None, reason: str | None = None) -> None:
        """Write one outcome file of this attempt (the controller folds it into the table)."""
        write_outcome(self.task.run_dir, Outcome(
            job_id=self.job_id, kind=kind, exit_code=exit_code, scheduler_id=scheduler_id_from_env(),
            reason=reason, progress=checkpoint_progress(self.task.run_dir, getattr(self.task, "checkpoint", None))))

    def _launch(self, job: runner.Task) -> subprocess.Popen:
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
            _signal_group(self._proc, signal.SIGKILL)

    def _on_term(self, signum: int, frame: object) -> None:
        """SIGTERM from SLURM (scancel, scontrol requeue, preemption): pass it on, let it checkpoint."""
        self._external_term = True
        if self._proc is not None:
            _signal_group(self._proc, signal.SIGTERM)

    def _stop_child(self) -> int | None:
        """SIGTERM the command's group, wait for all of it (checkpoint written), then its status."""
        if self._proc is None:
            return None
        if self._proc.poll() is None or self._group_alive():
            _signal_group(self._proc, signal.SIGTERM)
            self._wait_group()
        code = self._proc.wait()
        # a shell killed by the SIGTERM while its child checkpointed: the child's exit is not known
        return INTERRUPTED_EXIT if code in (-signal.SIGTERM, 128 + signal.SIGTERM) else code

    def _finish(self, code: int) -> str:
        """Report how the command ended; returns the outcome kind."""
        if code != 0 and self._external_term and code in (INTERRUPTED_EXIT, -signal.SIGTERM, 128 + signal.SIGTERM):
            # scancel, scontrol requeue or preemption: slurmctld only says COMPLETING now. A requeued
            # job runs again and resumes from the checkpoint; a cancelled one is recorded cancelled
            # by the next `sync` (sacct: CANCELLED).
            self._report(REQUEUED, code, f"{INTERRUPTED}; checkpointed")
            return REQUEUED
        self._report(FINISHED, runner.exit_status(code))
        return FINISHED

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit on USR2 (time limit near, or preemption warning)."""
        # SLURM's warning signal may come up to 60 s early: near the limit it is a time-out, else preemption
        kind = "timeout" if time.time() >= self._deadline - 65 else "preempted"
        code = self._stop_child()
        if code == 0:
            self._report(FINISHED, 0)
            return None  # finished just in time: nothing to requeue
        if code not in (INTERRUPTED_EXIT, None):
            self._report(FINISHED, runner.exit_status(code), f"crashed (exit code {code} while checkpointing)")
            return None
        if self.requeues >= self.max_requeues:
            self._report(GAVE_UP, code, f"{kind}: gave up after {self.requeues} requeues")
            return None
        self.requeues += 1
        self._report(REQUEUED, code, f"{kind}: checkpointed and requeued (requeue {self.requeues})")
        self._checkpointing = True
        return submitit.helpers.DelayedSubmission(self)
