"""The local executor: runs a sweep's jobs on this machine, N at a time.

The controller claims jobs from the table with a lease, heartbeats the leases while they run and
records every outcome the way the SLURM executor does: each job's supervisor writes the attempt's
outcome file (``near.executors.outcomes``), the controller folds it into the table through
``near.executors.base`` (one retry policy for both backends):

- exit 0 -> done; 2 -> failed (bad config, not retried); 3 (interrupted, resumable) -> pending;
  any other status -> a crash, retried until ``max_attempts`` crashes without checkpoint progress
  were charged, then failed, which blocks the job's dependents;
- a job running past its ``time`` resource is stopped and recorded as a lost attempt (timeout);
- outcome files the table does not have yet (a controller that died, or could not write because
  the disk was full, after a job finished) are folded when ``run`` starts: no finished job runs again;
- Ctrl-C / SIGTERM: every running job is stopped gracefully (SIGTERM to its process group, wait,
  SIGKILL) and put back to pending with no attempt charged; running again continues;
- a controller that dies (even SIGKILL) takes its jobs with it (parent-death signal) and stops
  heartbeating: once the lease expires any controller requeues the jobs (attempts count).

Several controllers on one table never run the same job: claims are atomic, and a controller that
finds it lost a lease stops that job.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, TextIO

from near.errors import TableError
from near.executors import runner
from near.executors.base import Hook, decide, fold, record_outcome, run_hooks
from near.executors.outcomes import FINISHED, LOST, STOPPED, Outcome, read_outcomes
from near.jobtable import ACTIVE_STATES, CANCELLED, FAILED, PENDING, PRUNED, Change, JobRecord, JobTable
from near.snapshot import Snapshotter
from near.sweep.spec import time_to_seconds


@dataclass
class _Running:
    job: JobRecord
    proc: subprocess.Popen
    started: float
    deadline: float | None
    launch_id: str = ""


@dataclass
class RunResult:
    """Summary of one ``run``: final counts and whether it was interrupted."""

    counts: dict[str, int]
    interrupted: bool = False
    finished: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.counts.get("failed", 0) == 0 and self.counts.get("blocked", 0) == 0 \
            and self.counts.get("cancelled", 0) == 0


def _label(job: JobRecord) -> str:
    return f"{job.job_id} {job.stage:<5} {job.label}"


class LocalExecutor:
    """Runs the pending jobs of one table with ``workers`` parallel processes."""

    def __init__(self, table: JobTable, *, workers: int = 1, lease_s: float = 60.0,
                 heartbeat_s: float | None = None, grace_s: float = 10.0, progress_s: float = 10.0,
                 poll_s: float = 0.1, out: TextIO | None = None, max_jobs: int | None = None,
                 hooks: list[Hook] | None = None):
        self.table = table
        self.workers = max(1, workers)
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else max(0.2, lease_s / 4)
        self.grace_s = grace_s
        self.progress_s = progress_s
        self.poll_s = poll_s
        self.out = out or sys.stdout
        self.max_jobs = max_jobs
        self.hooks = list(hooks or [])
        self.owner = f"local:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.running: dict[str, _Running] = {}
        self._stop_signal: int | None = None
        self._started = 0
        self._idle_claim = False
        self._last_claim = 0.0
        self.snapshots = Snapshotter(table.exp_dir, table.meta(), self.say)

    # ------------------------------------------------------------------ output
    def say(self, msg: str) -> None:
        self.out.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
        self.out.flush()

    def _counts_line(self) -> str:
        c = self.table.counts()
        return "  ".join(f"{k} {v}" for k, v in c.items() if v or k in ("pending", "running", "done"))

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
        else:  # a second Ctrl-C: stop waiting politely
            self.grace_s = 0.5

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask ``run`` to stop (as a signal would)."""
        self._on_signal(signum, None)

    # ------------------------------------------------------------------ main loop
    def run(self, install_signals: bool = True) -> RunResult:
        """Run until no job is left to run (or a stop is requested); returns the final counts."""
        old = {}
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, self._on_signal)
        finished: list[str] = []
        interrupted = False
        try:
            self.table.check()
            self._recover()
            self._requeue_stale()
            self.say(f"controller {self.owner}: {self.workers} worker(s); {self._counts_line()}")
            last_beat = last_progress = last_stale = time.monotonic()
            while self._stop_signal is None:
                now = time.monotonic()
                if now - last_beat >= self.heartbeat_s and self.running:
                    self._heartbeat()
                    last_beat = now
                if now - last_stale >= self.lease_s / 2:
                    self._requeue_stale()
                    last_stale = now
                finished += self._reap()
                run_hooks(self.hooks, self.table)
                self.dispatch()
                if not self.running and self._nothing_left():
                    break
                if now - last_progress >= self.progress_s:
                    self.say(self._counts_line())
                    last_progress = now
                time.sleep(self.poll_s)
            interrupted = self._stop_signal is not None
            if interrupted:
                self._stop_all(f"interrupted by {signal.Signals(self._stop_signal).name}")
        finally:
            # never leave a job behind, whatever went wrong in the loop (a full disk included: the
            # jobs' outcome files keep what the table could not take, the next run folds them)
            if self.running:
                self._stop_all("controller error", record=False)
            for sig, handler in old.items():
                signal.signal(sig, handler)
        counts = self.table.counts()
        self.say(("stopped; " if interrupted else "finished; ") + self._counts_line())
        return RunResult(counts=counts, interrupted=interrupted, finished=finished)

    def _recover(self) -> None:
        """Fold the outcome files of active jobs that the table does not have yet: jobs that finished
        while their controller died or could not write (disk full) are recorded, not run again."""
        active = [j for j in self.table.jobs(states=ACTIVE_STATES) if j.lease_owner != self.owner]
        if not active:
            return
        folded = self.table.folded([j.job_id for j in active])
        changes: list[Change] = []
        for job in active:
            found = [o for o in read_outcomes(job.run_dir, job.job_id, folded.get(job.job_id, set()))
                     if o.kind == FINISHED]
            if found:
                chs, after = fold(job, found)
                changes += chs
                self.say(f"{after.state:<8} {_label(job)} (outcome recorded by its supervisor)")
        if changes:
            self.table.transition_many(changes)

    def _requeue_stale(self) -> None:
        def lost(job: JobRecord) -> Change:
            return decide(job, Outcome(job.job_id, LOST, reason=f"lease expired (worker {job.lease_owner} lost)"))

        for job_id, state in self.table.requeue_stale(exclude_owner=self.owner, decide=lost):
            self.say(f"{state:<8} {job_id} (lease of a dead worker expired)")

    def _nothing_left(self) -> bool:
        """True when this controller has nothing more to do (called with no job of its own running).

        Jobs other controllers hold under a lease are waited for: they may finish (unlocking
        dependents) or their controller may be dead, in which case the lease expires and the job
        is requeued here."""
        if self.max_jobs is not None and self._started >= self.max_jobs:
            return True
        others = self.table.leased()
        if others:
            return False
        pending = self.table.counts()["pending"]
        return pending == 0 or not self._claimable()

    def _claimable(self) -> bool:
        # A pending job whose dependencies are all done or pending can eventually run here; one
        # that waits only on unleased active jobs (e.g. queued on SLURM) cannot: do not spin on it.
        ok = ("done", "pending")
        return any(all(self.table.get(d).state in ok for d in j.deps.values())
                   for j in self.table.jobs(states=[PENDING])[:50])

    # ------------------------------------------------------------------ the executor interface
    def dispatch(self) -> int:
        """Claim and start as many jobs as there are free workers; returns how many started."""
        free = self.workers - len(self.running)
        if self.max_jobs is not None:
            free = min(free, self.max_jobs - self._started)
        if free <= 0:
            return 0
        # a claim is a write transaction: after an empty one, wait for a local job to finish or a
        # second to pass (other controllers may finish dependencies) instead of polling the lock
        now = time.monotonic()
        if self._idle_claim and now - self._last_claim < 1.0:
            return 0
        self._last_claim = now
        claimed = self.table.claim(self.owner, limit=free, lease_s=self.lease_s)
        self._idle_claim = not claimed
        started = 0
        for job in claimed:
            launch_id = f"local-{uuid.uuid4().hex[:12]}"
            try:
                self.snapshots.freeze(job)
                self.table.set_command(job.job_id, job.command, scheduler_id=launch_id)
                proc = runner.launch(job, launch_id)
            except OSError as err:
                self.table.mark_failed(job.job_id, f"cannot start: {err}", owner=self.owner)
                self.say(f"failed   {_label(job)} (cannot start: {err})")
                continue
            limit = job.resources.get("time")
            deadline = time.monotonic() + time_to_seconds(limit) if limit else None
            self.running[job.job_id] = _Running(job, proc, time.monotonic(), deadline, launch_id)
            self._started += 1
            started += 1
            self.say(f"running  {_label(job)} (attempt {job.attempts}/{job.max_attempts})")
        return started

    def poll(self) -> list[Outcome]:
        """Reap finished jobs and record their outcomes; returns them."""
        got: list[Outcome] = []
        self._reap(got)
        return got

    def cancel(self, job_ids, reason: str = "cancelled by user") -> int:
        """Stop these jobs (those running here) and record them cancelled."""
        return self._end(job_ids, CANCELLED, reason)

    def prune(self, job_ids, reason: str) -> int:
        """Stop these active jobs and record them pruned."""
        return self._end(job_ids, PRUNED, reason)

    def _end(self, job_ids, state: str, reason: str) -> int:
        ids = list(job_ids)
        for jid in ids:
            r = self.running.pop(jid, None)
            if r is not None:
                runner.stop(r.proc, self.grace_s)
                self.say(f"{state:<8} {_label(r.job)} ({reason})")
                self._idle_claim = False  # a worker is free: a hook's new job starts this cycle
        if state == PRUNED:
            return self.table.prune(ids, reason)
        return self.table.cancel(ids, reason)

    # ------------------------------------------------------------------ running jobs
    def _heartbeat(self) -> None:
        owned = self.table.heartbeat(self.owner, list(self.running), self.lease_s)
        for job_id in [j for j in self.running if j not in owned]:
            r = self.running.pop(job_id)
            runner.stop(r.proc, self.grace_s)
            self.say(f"lost     {_label(r.job)} (lease taken over; stopped here)")

    def _outcome(self, r: _Running, status: int, **override) -> Outcome:
        """The supervisor's outcome of this attempt (its file; the exit status if it wrote none),
        with ``override`` applied (the controller's reading: a time-out, a stop)."""
        folded = self.table.folded([r.job.job_id]).get(r.job.job_id, set())
        mine = [o for o in read_outcomes(r.job.run_dir, r.job.job_id, folded)
                if o.kind == FINISHED and o.scheduler_id == r.launch_id]
        base = mine[-1] if mine else Outcome(r.job.job_id, FINISHED, exit_code=status, scheduler_id=r.launch_id)
        return base.but(**override) if override else base

    def _reap(self, got: list[Outcome] | None = None) -> list[str]:
        done = []
        now = time.monotonic()
        for job_id, r in list(self.running.items()):
            rc = r.proc.poll()
            if rc is None and r.deadline is not None and now > r.deadline:
                runner.stop(r.proc, self.grace_s)
                del self.running[job_id]
                limit = r.job.resources.get("time")
                o = self._outcome(r, runner.exit_status(r.proc.returncode), kind=LOST,
                                  reason=f"timeout after {limit}")
                self._record(r, o)
                continue
            if rc is None:
                continue
            del self.running[job_id]
            o = self._outcome(r, runner.exit_status(rc))
            self._record(r, o)
            if got is not None:
                got.append(o)
            self._idle_claim = False  # a finished job may have unlocked its dependents
            done.append(job_id)
        return done

    def _record(self, r: _Running, o: Outcome) -> None:
        job, took = r.job, time.monotonic() - r.started
        current = self.table.get(job.job_id)
        if current.lease_owner != self.owner:
            self.say(f"lost     {_label(job)} (no longer ours)")
            return
        state = record_outcome(self.table, current, o, owner=self.owner) or "lost"
        after = self.table.get(job.job_id)
        if state == "done":
            self.say(f"done     {_label(job)} ({took:.1f}s)")
            return
        extra = ""
        if state == FAILED:
            blocked = len(self.table.dependents(job.job_id))
            extra = f"; {blocked} dependent job(s) blocked" if blocked else ""
        self.say(f"{state:<8} {_label(job)} ({after.reason or o.kind}; see {job.run_dir}/{runner.STDERR_FILE}{extra})")

    def _stop_all(self, reason: str, record: bool = True) -> None:
        items = list(self.running.items())
        for _, r in items:
            runner.signal_group(r.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for job_id, r in items:
            try:
                r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            runner.stop(r.proc, 0.0)
            del self.running[job_id]
            if not record:
                continue  # the table failed: the outcome file stays for the next run to fold
            status = runner.exit_status(r.proc.returncode)
            try:
                if status == 0:  # it finished while we were stopping it
                    self._record(r, self._outcome(r, status))
                else:
                    o = self._outcome(r, status, kind=STOPPED, reason=reason)
                    record_outcome(self.table, self.table.get(job_id), o, owner=self.owner)
                    self.say(f"pending  {_label(r.job)} ({reason}; no attempt charged)")
            except TableError as err:
                self.say(f"unrecorded {_label(r.job)} ({err}); its outcome file stays for the next run")


def _signame(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def run_local(table: JobTable, workers: int = 1, **kwargs) -> RunResult:
    """Convenience: ``LocalExecutor(table, workers=workers, **kwargs).run()``."""
    return LocalExecutor(table, workers=workers, **kwargs).run()


Progress = Callable[[str], None]
