"""The local backend: runs a sweep's jobs on this machine, N at a time, for the controller.

Each attempt runs under its supervisor (:mod:`near.executors.runner`), which writes the attempt's
outcome file; the :class:`~near.executors.controller.Controller` folds it. This backend only says
what the files cannot:

- an attempt whose supervisor exited without a file: its exit status;
- an attempt it stopped itself: Ctrl-C / SIGTERM of the controller (``stopped``: back to pending,
  attempt refunded) or a time-out (``lost``: a crash unless its checkpoint advanced) -- unless the
  job finished (0) or refused its config (2) meanwhile, which its file then says;
- a job another controller held whose lease expired or whose controller (on this host) is dead,
  once no supervisor holds its run dir's lock: its files first, else interrupted when its
  controller is known dead (not the job's fault), lost (a crash) when only its lease expired.

Claims carry a lease that this backend heartbeats; a controller that finds its lease taken over
stops that attempt and records nothing. Several controllers on one table never run a job twice
at once: claims are atomic, and an attempt waits for its run dir's lock.

A transient fault at dispatch (a full disk, too many open files) puts the job back to pending
with the error and backs off before claiming again; other errors fail the job.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Sequence

from near.executors import runner
from near.executors.base import Plan, View, backoff_s, decide, is_transient, read_as
from near.executors.outcomes import FINISHED, LOST, STOPPED, Outcome
from near.exitcodes import EXIT_INTERRUPTED
from near.jobtable import ACTIVE_STATES, FAILED, PENDING, Change, JobRecord, JobTable
from near.snapshot import Snapshotter
from near.sweep.spec import time_to_seconds

@dataclass
class _Attempt:
    job: JobRecord
    proc: subprocess.Popen
    launch_id: str
    started: float
    deadline: float | None
    reading: tuple[str, str] | None = None   # (kind, reason): how the controller reads its end
    signalled: float | None = None
    signals: int = 0
    abandoned: bool = False                  # its lease was taken over: record nothing


def _label(job: JobRecord) -> str:
    return f"{job.job_id} {job.stage:<5} {job.label}"


def owner_dead(owner: str | None) -> bool:
    """Whether ``owner`` is a local controller of this host whose process is gone."""
    parts = (owner or "").split(":")
    if len(parts) != 4 or parts[0] != "local" or parts[1] != socket.gethostname():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


class LocalBackend:
    """Runs ``table``'s pending jobs with ``workers`` parallel supervised processes."""

    name = "local"

    def __init__(self, table: JobTable, *, workers: int = 1, lease_s: float = 60.0,
                 heartbeat_s: float | None = None, grace_s: float = 10.0, max_jobs: int | None = None,
                 log: Callable[[str], None] = print):
        self.table = table
        self.workers = max(1, workers)
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else max(0.2, lease_s / 4)
        self.grace_s = grace_s
        self.max_jobs = max_jobs
        self.log = log
        self.owner = f"local:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.running: dict[str, _Attempt] = {}
        self.snapshots = Snapshotter(table.exp_dir, table.meta(), log)
        self._started = 0
        self._idle_claim = False
        self._last_claim = 0.0
        self._last_beat = time.monotonic()
        self._last_foreign = 0.0
        self._faults = 0
        self._resume_at = 0.0
        self._ended: dict[str, _Attempt] = {}

    # ------------------------------------------------------------------ look / explain
    def look(self) -> View:
        """Reap exited supervisors, enforce time limits and stops, heartbeat, and every second or
        so pick up the jobs of dead or expired controllers."""
        now = time.monotonic()
        if self.running and now - self._last_beat >= self.heartbeat_s:
            self._heartbeat()
            self._last_beat = now
        exited: dict[str, _Attempt] = {}
        for job_id, a in list(self.running.items()):
            if a.proc.poll() is not None:
                del self.running[job_id]
                runner.kill_job_group(a.job.run_dir)
                if not a.abandoned:
                    exited[job_id] = a
                continue
            if a.reading is None and a.deadline is not None and now > a.deadline:
                self._stop(a, (LOST, f"timeout after {a.job.resources.get('time')}"))
            self._escalate(a, now)
        jobs = [self.table.get(j) for j in exited]
        lost: dict[str, tuple[bool, str]] = {}
        if now - self._last_foreign >= min(1.0, self.lease_s / 4):
            self._last_foreign = now
            for job in self._foreign_lost():
                jobs.append(job)
                dead = owner_dead(job.lease_owner)
                lost[job.job_id] = (dead, f"lease of {job.lease_owner} "
                                    + ("ended: its controller died" if dead else "expired"))
        self._ended.update(exited)
        return View(jobs=[j for j in jobs if j.state in ACTIVE_STATES],
                    state={"exited": {j: runner.exit_status(a.proc.returncode) for j, a in exited.items()},
                           "launch": {j: a.launch_id for j, a in exited.items()},
                           "lost": lost},
                    readings={j: (a.launch_id, *a.reading) for j, a in exited.items() if a.reading},
                    owner_checked=True)

    def _foreign_lost(self) -> list[JobRecord]:
        """Jobs leased by another local controller that is dead or whose lease expired, with no
        supervisor left holding their run dir."""
        wall = time.time()
        out = []
        for job_id, owner, expires in self.table.leased():
            if owner == self.owner or not str(owner).startswith("local:"):
                continue
            if not (expires < wall or owner_dead(owner)):
                continue
            job = self.table.get(job_id)
            if job.lease_owner == owner and not runner.attempt_running(job.run_dir):
                out.append(job)
        return out

    def explain(self, jobs: Sequence[JobRecord], view: View) -> Plan:
        """Pure: an exit status for an attempt that wrote no file (read as the controller stopped
        it, if it did), and ``lost`` for a dead controller's job its files leave active."""
        plan = Plan()
        for job in jobs:
            if job.state not in ACTIVE_STATES:
                continue
            o = None
            if job.job_id in view.state["exited"]:
                o = Outcome(job.job_id, FINISHED, exit_code=view.state["exited"][job.job_id],
                            scheduler_id=view.state["launch"][job.job_id])
                reading = view.readings.get(job.job_id)
                if reading is not None:
                    o = read_as(o, *reading[1:])
            elif job.job_id in view.state["lost"]:
                dead, why = view.state["lost"][job.job_id]
                if dead:
                    # its controller died (its attempt got SIGTERM, or never started): interrupted,
                    # not the job's crash; capped by max_requeues like every uncharged attempt
                    o = Outcome(job.job_id, FINISHED, exit_code=EXIT_INTERRUPTED, reason=why)
                else:
                    o = Outcome(job.job_id, LOST, reason=why)
            ch = decide(job, o) if o is not None else None
            if ch is not None:
                plan.changes.append(ch)
        return plan

    def recorded(self, ch: Change) -> None:
        a = self._ended.pop(ch.job_id, None)
        where = ""
        if a is not None:
            where = f" ({time.monotonic() - a.started:.1f}s)" if ch.to_state == "done" else \
                f" ({ch.reason or 'ended'}; see {a.job.run_dir}/{runner.STDERR_FILE})"
        elif ch.outcome:  # another controller's attempt, as its supervisor wrote it
            where = f" (outcome recorded by its supervisor{'; ' + ch.reason if ch.reason else ''})"
        elif ch.reason:
            where = f" ({ch.reason})"
        if ch.to_state == FAILED:
            blocked = len(self.table.dependents(ch.job_id))
            where += f"; {blocked} dependent job(s) blocked" if blocked else ""
        label = _label(a.job) if a is not None else ch.job_id
        self.log(f"{ch.to_state:<8} {label}{where}")
        self._idle_claim = False  # a finished job may have unlocked its dependents

    def settle(self, plan: Plan) -> None:
        self._ended.clear()

    # ------------------------------------------------------------------ dispatch
    def dispatch(self) -> int:
        """Claim and start as many jobs as there are free workers; returns how many started."""
        free = self.workers - len(self.running)
        if self.max_jobs is not None:
            free = min(free, self.max_jobs - self._started)
        now = time.monotonic()
        if free <= 0 or now < self._resume_at:
            return 0
        # a claim is a write transaction: after an empty one, wait for a local job to finish or a
        # second to pass (other controllers may finish dependencies) instead of polling the lock
        if self._idle_claim and now - self._last_claim < 1.0:
            return 0
        self._last_claim = now
        claimed = self.table.claim(self.owner, limit=free, lease_s=self.lease_s)
        self._idle_claim = not claimed
        held_at = time.monotonic()   # when the claimed jobs' leases were last renewed
        taken_over: set[str] = set()

        def still_held(k: int) -> bool:
            """Whether this controller still holds ``claimed[k]``. A slow snapshot (a large tree, a
            slow disk) holds up the heartbeat: the claims may have lapsed and another controller
            run the jobs meanwhile, so past a heartbeat period their leases are renewed first."""
            nonlocal held_at
            if time.monotonic() - held_at >= self.heartbeat_s:
                left = [j.job_id for j in claimed[k:] if j.job_id not in taken_over]
                taken_over.update(set(left) - self.table.heartbeat(self.owner, left, self.lease_s))
                held_at = time.monotonic()
            return claimed[k].job_id not in taken_over

        started = 0
        for k, job in enumerate(claimed):
            launch_id = f"local-{uuid.uuid4().hex[:12]}"
            try:
                held = still_held(k)
                if held:
                    self.snapshots.freeze(job, self.table.claims_since_reset(job.job_id) <= 1)
                    held = still_held(k)
                if not held:
                    self.log(f"lost     {_label(job)} (its claim lapsed while dispatching; another controller "
                             "has it)")
                    continue
                self.table.set_command(job.job_id, job.command, scheduler_id=launch_id)
                proc = runner.launch(job, launch_id)
            except OSError as err:
                if not is_transient(err):
                    self.table.mark_failed(job.job_id, f"cannot start: {err}", owner=self.owner)
                    self.log(f"failed   {_label(job)} (cannot start: {err})")
                    continue
                self._faults += 1
                wait = backoff_s(self._faults)
                self._resume_at = time.monotonic() + wait
                for left in claimed[k:]:
                    self.table.release(left.job_id, f"cannot start yet: {err}; retried in {wait:.0f} s",
                                       owner=self.owner)
                self.log(f"pending  {_label(job)} (cannot start yet: {err}; "
                         f"{len(claimed) - k} job(s) back to pending, retrying in {wait:.0f} s)")
                break
            self._faults = 0
            limit = job.resources.get("time")
            deadline = time.monotonic() + time_to_seconds(limit) if limit else None
            self.running[job.job_id] = _Attempt(job, proc, launch_id, time.monotonic(), deadline)
            self._started += 1
            started += 1
            self.log(f"running  {_label(job)} (attempt {job.attempts}/{job.max_attempts})")
        return started

    # ------------------------------------------------------------------ stopping
    def stop(self, job_ids: Sequence[str] | None, reason: str) -> None:
        """Ask these attempts' supervisors to stop them; read as stopped (attempt refunded)."""
        for job_id in list(self.running) if job_ids is None else job_ids:
            a = self.running.get(job_id)
            if a is not None and a.reading is None:
                self._stop(a, (STOPPED, reason))
        self._idle_claim = False  # a worker frees up: a hook's new job starts at once

    def hurry(self) -> None:
        self.grace_s = min(self.grace_s, 0.5)

    def _stop(self, a: _Attempt, reading: tuple[str, str]) -> None:
        a.reading = reading
        a.signalled = time.monotonic()
        a.signals = 1
        runner.signal_supervisor(a.proc, signal.SIGTERM)

    def _escalate(self, a: _Attempt, now: float) -> None:
        """After the grace, a second SIGTERM (the supervisor SIGKILLs the job); five seconds later
        SIGKILL for a supervisor that still did not exit, and for the job's group."""
        if a.signalled is None or now - a.signalled < (self.grace_s if a.signals == 1 else 5.0):
            return
        a.signalled = now
        a.signals += 1
        if a.signals == 2:
            runner.signal_supervisor(a.proc, signal.SIGTERM)
        else:
            runner.signal_supervisor(a.proc, signal.SIGKILL)
            runner.kill_job_group(a.job.run_dir)

    def _heartbeat(self) -> None:
        owned = self.table.heartbeat(self.owner, list(self.running), self.lease_s)
        for job_id, a in self.running.items():
            if job_id not in owned and not a.abandoned:
                a.abandoned = True
                self._stop(a, (STOPPED, "lease taken over"))
                self.log(f"lost     {_label(a.job)} (lease taken over; stopped here)")

    def busy(self) -> bool:
        return bool(self.running)

    def abandon(self) -> None:
        for a in list(self.running.values()):
            runner.stop(a.proc, a.job.run_dir, min(self.grace_s, 2.0))
        self.running.clear()

    # ------------------------------------------------------------------ the end
    def finished(self) -> bool:
        """Nothing of ours runs, and nothing is left that this controller could run: jobs other
        controllers hold are waited for (they may finish dependencies, or die and be taken over)."""
        if self.running:
            return False
        if self.max_jobs is not None and self._started >= self.max_jobs:
            return True
        if self.table.leased():
            return False
        pending = self.table.counts()["pending"]
        return pending == 0 or not self._claimable()

    def _claimable(self) -> bool:
        # A pending job whose dependencies are all done or pending can eventually run here; one
        # that waits only on unleased active jobs (e.g. queued on SLURM) cannot: do not spin on it.
        ok = ("done", "pending")
        return any(all(self.table.get(d).state in ok for d in j.deps.values())
                   for j in self.table.jobs(states=[PENDING])[:50])



def run_local(table: JobTable, workers: int = 1, hooks: Sequence = (), *, log: Callable[[str], None] = print,
              progress_s: float = 10.0, install_signals: bool = True, **backend_options):
    """``Controller(table, LocalBackend(table, ...), hooks).run()``: run a table's jobs here."""
    from near.executors.controller import Controller

    backend = LocalBackend(table, workers=workers, log=log, **backend_options)
    return Controller(table, backend, hooks, progress_s=progress_s, log=log).run(install_signals=install_signals)
