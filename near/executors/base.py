"""What every executor shares: the interface, the outcome of an attempt, and the ONE retry policy.

An executor dispatches jobs, polls for their outcomes and cancels (or prunes) them. Whatever the
backend, an attempt ends as an :class:`~near.executors.outcomes.Outcome`, and :func:`decide` turns
it into the job table change, with the same exit-code semantics everywhere:

- exit 0: done; exit 2: bad config, failed without retry;
- exit 3 (interrupted, checkpoint written): back to pending, nothing charged; a scheduler that
  holds the job to run it again (``requeued``) puts it back to queued as a new attempt;
- any other exit, a lost node, a time-out without a checkpoint: a crash. It is retried until
  ``max_attempts`` crashes were charged; a crash after which the job's checkpoint had advanced
  since the last recorded outcome is not charged (a long run split over many allocations never
  runs out of attempts while it makes progress; one that crashes without progress does).

Counters go to the table's columns: ``crashes``, ``requeues``, ``charged``, ``attempts``.
"""

from __future__ import annotations

import copy
import signal
from dataclasses import replace
from typing import Callable, Iterable, Protocol

from near.executors.outcomes import (
    CANCELLED as K_CANCELLED, FINISHED, GAVE_UP, LOST, REQUEUED, STARTED, STOPPED, Outcome,
)
from near.jobtable import (
    ACTIVE_STATES, CANCELLED, DONE, FAILED, PENDING, QUEUED, RUNNING, Change, JobRecord, JobTable,
)

EXIT_OK, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 2, 3

Hook = Callable[[JobTable], None]


class Executor(Protocol):
    """The executor interface (the local pool and SLURM both provide it)."""

    def dispatch(self) -> int:
        """Start (or submit) the jobs that can run now; returns how many."""

    def poll(self) -> list[Outcome]:
        """Outcomes of attempts observed since the last poll (already recorded in the table)."""

    def cancel(self, job_ids: Iterable[str], reason: str) -> int:
        """Stop these jobs and record them cancelled; returns how many changed."""

    def prune(self, job_ids: Iterable[str], reason: str) -> int:
        """Stop these active jobs and record them pruned (a search stopped them early)."""


def run_hooks(hooks: Iterable[Hook], table: JobTable) -> None:
    """Call each controller hook once (one poll cycle) with the table."""
    for hook in hooks:
        hook(table)


def _crash(job: JobRecord, o: Outcome, why: str) -> Change:
    advanced = o.progress is not None and o.progress != job.progress
    charged = job.charged + (0 if advanced else 1)
    note = "; checkpoint advanced, not charged" if advanced else ""
    if charged >= job.max_attempts:
        return Change(job.job_id, FAILED, expect=(job.state,), exit_code=o.exit_code, crashes=1,
                      charged=0 if advanced else 1, progress=o.progress,
                      reason=f"{why} (lost {charged} of max_attempts {job.max_attempts}){note}")
    return Change(job.job_id, PENDING, expect=(job.state,), exit_code=o.exit_code, crashes=1,
                  charged=0 if advanced else 1, progress=o.progress,
                  reason=f"{why}; will be resubmitted ({charged}/{job.max_attempts}){note}")


def _exit_words(code: int | None) -> str:
    if code is not None and code > 128:
        try:
            return f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exit code {code}"


def decide(job: JobRecord, o: Outcome) -> Change | None:
    """The table change that records outcome ``o`` of ``job`` (in its current state), or None when
    the outcome changes nothing: the job is no longer active (cancelled, already recorded), or the
    outcome belongs to an attempt the job was resubmitted away from (another scheduler id)."""
    if job.state not in ACTIVE_STATES:
        return None
    if o.scheduler_id and job.scheduler_id and o.scheduler_id != job.scheduler_id:
        return None  # a stale attempt: the job runs under another id now
    sid = o.scheduler_id
    if o.kind == STARTED:
        where = f"{sid or 'local'} on {o.host}" if o.host else (sid or "")
        if job.state == QUEUED:
            return Change(job.job_id, RUNNING, expect=(QUEUED,), scheduler_id=sid, progress=o.progress,
                          detail=f"started: {where}")
        return Change(job.job_id, None, expect=(RUNNING,), scheduler_id=sid, progress=o.progress)
    if o.kind == FINISHED:
        code = o.exit_code
        if code == EXIT_OK:
            return Change(job.job_id, DONE, expect=(job.state,), exit_code=0, progress=o.progress)
        if code == EXIT_CONFIG:
            return Change(job.job_id, FAILED, expect=(job.state,), exit_code=code, progress=o.progress,
                          reason="bad config (exit code 2); not retried")
        if code == EXIT_INTERRUPTED:
            return Change(job.job_id, PENDING, expect=(job.state,), exit_code=code, requeues=1,
                          progress=o.progress, reason=o.reason or "interrupted (exit 3, resumable)")
        return _crash(job, o, o.reason or f"crashed ({_exit_words(code)})")
    if o.kind == REQUEUED:
        if job.state == QUEUED:  # already put back (the scheduler fallback saw it first)
            return Change(job.job_id, None, expect=(QUEUED,), progress=o.progress)
        return Change(job.job_id, QUEUED, expect=(RUNNING,), exit_code=o.exit_code, charge=1, requeues=1,
                      progress=o.progress, reason=o.reason or "interrupted by the scheduler; requeued")
    if o.kind == GAVE_UP:
        return Change(job.job_id, FAILED, expect=(job.state,), exit_code=o.exit_code, progress=o.progress,
                      reason=o.reason or "gave up")
    if o.kind == LOST:
        return _crash(job, o, o.reason or "lost")
    if o.kind == K_CANCELLED:
        return Change(job.job_id, CANCELLED, expect=(job.state,), exit_code=o.exit_code,
                      reason=o.reason or "cancelled on the cluster")
    if o.kind == STOPPED:
        return Change(job.job_id, PENDING, expect=ACTIVE_STATES, exit_code=o.exit_code, charge=-1,
                      progress=o.progress, reason=o.reason or "stopped by the controller")
    raise ValueError(f"unknown outcome kind {o.kind!r}")


def advance(job: JobRecord, ch: Change) -> JobRecord:
    """``job`` as it will be once ``ch`` applied (to decide the next outcome of the same job)."""
    after = copy.copy(job)  # a shallow copy: much cheaper than dataclasses.replace on 25 fields
    after.state = ch.to_state or job.state
    after.charged, after.crashes = job.charged + ch.charged, job.crashes + ch.crashes
    after.requeues, after.attempts = job.requeues + ch.requeues, max(0, job.attempts + ch.charge)
    after.progress, after.scheduler_id = ch.progress or job.progress, ch.scheduler_id or job.scheduler_id
    return after


def fold(job: JobRecord, outcomes: Iterable[Outcome]) -> tuple[list[Change], JobRecord]:
    """The changes recording ``outcomes`` (oldest first) of one job, each decided on the state the
    previous ones leave, and that state. An outcome file that changes nothing is still recorded
    as folded (a state-keeping change), so it is never read again."""
    changes = []
    for o in outcomes:
        ch = decide(job, o)
        if ch is None:
            if o.name is not None:
                changes.append(Change(job.job_id, None, outcome=o.name))
            continue
        if o.name is not None:
            ch = replace(ch, outcome=o.name)
        changes.append(ch)
        job = advance(job, ch)
    return changes, job


def record_outcome(table: JobTable, job: JobRecord, outcome: Outcome, *, owner: str | None = None) -> str | None:
    """Record one outcome of ``job`` in ``table`` by the retry policy; returns the job's new state,
    or None if nothing applied (the job moved meanwhile, or this outcome was recorded before).
    With ``owner``, only while ``owner`` holds the job's lease."""
    changes, after = fold(job, [outcome])
    if not changes:
        return None
    if owner is not None:
        changes = [replace(ch, owner=owner) for ch in changes]
    applied = table.transition_many(changes)
    return after.state if applied[-1] and changes[-1].to_state is not None else None
