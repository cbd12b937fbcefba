"""The controller: the one loop that drives a sweep's jobs through a backend (local or SLURM).

Each cycle:

1. the backend looks at its attempts (processes that exited, the scheduler's view, leases of
   dead controllers), BEFORE any outcome file is read;
2. the outcome files of the jobs to judge are read and folded (:func:`near.executors.base.fold`):
   what a job wrote is what happened to it;
3. only for what no file explains, the backend's view decides (:meth:`Backend.explain`);
4. the changes are applied as compare-and-sets, the scheduler side settled (scancel);
5. the hooks run (a search asks, tells, prunes), then the backend dispatches what can run now.

Ctrl-C / SIGTERM stops the controller's attempts through the backend; it keeps cycling until
they ended and their outcomes are folded, so a job that finished while being stopped is done and
one that was interrupted goes back to pending with no attempt charged. A second signal shortens
the grace. The same command run again continues where it stopped.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from near.errors import TableError
from near.executors.base import Backend, Hook, Plan, fold, read_as, run_hooks
from near.executors.outcomes import read_outcomes
from near.jobtable import JobRecord, JobTable


@dataclass
class RunResult:
    """How a run ended: the final counts and whether it was interrupted or timed out."""

    counts: dict[str, int]
    interrupted: bool = False
    timed_out: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Not stopped, and nothing failed, blocked or cancelled."""
        return not (self.interrupted or self.timed_out) and not any(
            self.counts.get(s, 0) for s in ("failed", "blocked", "cancelled"))


def unfolded_outcomes(table: JobTable, jobs: Sequence[JobRecord]) -> dict[str, list]:
    """Each job's outcome files the table has not folded yet, oldest first."""
    if not jobs:
        return {}
    folded = table.folded([j.job_id for j in jobs])
    return {j.job_id: read_outcomes(j.run_dir, j.job_id, folded.get(j.job_id, frozenset())) for j in jobs}


def judge(jobs: Sequence[JobRecord], found: dict[str, list], backend: Backend, view) -> Plan:
    """Pure given the backend's ``explain``: the files first, then the backend for the rest."""
    plan = Plan()
    after = []
    for job in jobs:
        outcomes = found.get(job.job_id, ())
        reading = view.readings.get(job.job_id)
        if reading is not None:
            launch, kind, reason = reading
            outcomes = [read_as(o, kind, reason) if o.scheduler_id == launch else o for o in outcomes]
        changes, job_after = fold(job, outcomes)
        plan.changes += changes
        after.append(job_after)
    rest = backend.explain(after, view)
    plan.changes += rest.changes
    plan.scancel += rest.scancel
    if view.owner_checked:
        owners = {j.job_id: j.lease_owner for j in jobs}
        plan.changes = [replace(ch, owner=owners.get(ch.job_id)) if owners.get(ch.job_id) else ch
                        for ch in plan.changes]
    return plan


class Controller:
    """Drives ``table``'s jobs through ``backend`` until none is left (see the module docstring)."""

    def __init__(self, table: JobTable, backend: Backend, hooks: Sequence[Hook] = (), *,
                 poll_s: float = 0.1, progress_s: float = 10.0, timeout_s: float | None = None,
                 log: Callable[[str], None] = print):
        self.table = table
        self.backend = backend
        self.hooks = list(hooks)
        self.poll_s = poll_s
        self.progress_s = progress_s
        self.timeout_s = timeout_s
        self.log = log
        self.stop_signal: int | None = None
        self.changed: dict[str, int] = {}

    # ------------------------------------------------------------------ output
    def say(self, msg: str) -> None:
        """One line of the controller's log."""
        self.log(msg)

    def counts_line(self) -> str:
        c = self.table.counts()
        return "  ".join(f"{k} {v}" for k, v in c.items() if v or k in ("pending", "running", "done"))

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        else:  # a second Ctrl-C: stop waiting politely
            self.backend.hurry()

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask ``run`` to stop (as a signal would)."""
        self._on_signal(signum, None)

    # ------------------------------------------------------------------ the cycle
    def cycle(self, *, dispatch: bool = True) -> Plan:
        """One poll: look, fold the files, explain the rest, apply, settle; then hooks and dispatch."""
        view = self.backend.look()
        found = unfolded_outcomes(self.table, view.jobs)
        plan = judge(view.jobs, found, self.backend, view)
        applied = self.table.transition_many(plan.changes) if plan.changes else []
        for ch, ok in zip(plan.changes, applied):
            if ok and ch.to_state is not None:
                self.changed[ch.to_state] = self.changed.get(ch.to_state, 0) + 1
                self.backend.recorded(ch)
        self.backend.settle(plan)
        if dispatch and self.stop_signal is None:
            run_hooks(self.hooks, self.table, self.prune)
            self.backend.dispatch()
        return plan

    def prune(self, job_ids: list[str], reason: str) -> int:
        """Record these active jobs pruned (a search stopped them), then stop their attempts."""
        n = self.table.prune(job_ids, reason)
        self.backend.stop(job_ids, reason)
        return n

    # ------------------------------------------------------------------ the loop
    def run(self, install_signals: bool = True) -> RunResult:
        """Cycle until nothing is left (or a stop, or the time-out); returns the final counts."""
        old = {}
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, self._on_signal)
        t0 = last_progress = time.monotonic()
        res = RunResult(counts={})
        try:
            self.table.check()
            self.say(f"controller {self.backend.name}: {self.counts_line()}")
            while True:
                self.cycle()
                if self.stop_signal is not None:
                    break
                if self.backend.finished():
                    break
                now = time.monotonic()
                if self.timeout_s is not None and now - t0 > self.timeout_s:
                    res.timed_out = True
                    self.say(f"timed out after {self.timeout_s:.0f} s")
                    break
                if now - last_progress >= self.progress_s:
                    self.say(self.counts_line())
                    last_progress = now
                time.sleep(self.poll_s)
            if self.stop_signal is not None:
                res.interrupted = True
                self._stop_everything(f"interrupted by {signal.Signals(self.stop_signal).name}")
        except BaseException:
            # never leave an attempt behind, whatever went wrong (a full disk included: the outcome
            # files keep what the table could not take; the next run folds them)
            self.backend.abandon()
            raise
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        res.counts = self.table.counts()
        res.seconds = time.monotonic() - t0
        self.say(("stopped; " if res.interrupted else "finished; ") + self.counts_line())
        return res

    def _stop_everything(self, reason: str) -> None:
        """Stop this controller's attempts and fold how they ended."""
        self.backend.stop(None, reason)
        while self.backend.busy():
            try:
                self.cycle(dispatch=False)
            except TableError as err:
                self.say(f"cannot record ({err}); the outcome files stay for the next run")
                self.backend.abandon()
                return
            time.sleep(self.poll_s)
        self.cycle(dispatch=False)

