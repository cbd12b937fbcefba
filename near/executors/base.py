"""What every backend shares: the backend interface, and the ONE retry policy.

A backend (local processes, SLURM) starts attempts, tells what its processes or scheduler say
about them, and stops them; the :class:`~near.executors.controller.Controller` drives it and makes
every decision. Whatever the backend, an attempt ends as an :class:`~near.executors.outcomes.Outcome`
(an outcome file first, the scheduler or an exit status only for what no file explains), and
:func:`decide` turns it into the job table change, with the same exit-code semantics everywhere
(:mod:`near.exitcodes`):

- exit 0: done; exit 2: bad config, failed without retry;
- exit 3 (interrupted, checkpoint written): back to pending, nothing charged; a scheduler that
  holds the job to run it again (``requeued``) puts it back to queued as a new attempt;
- any other exit, a lost node, a time-out without a checkpoint: a crash. It is retried until
  ``max_attempts`` crashes were charged; a crash after which the job's declared checkpoint had
  advanced since the last recorded outcome is not charged (a long run split over many allocations
  never runs out of attempts while it makes progress; one that crashes without progress does);
- uncharged attempts (interruptions, crashes with progress) are capped too, by the job's
  ``max_requeues`` (``resources.max_requeues``, default 20): nothing loops forever.

Counters go to the table's columns: ``crashes``, ``requeues``, ``charged``, ``attempts``.
"""

from __future__ import annotations

import copy
import errno
import signal
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Protocol, Sequence

from near.executors.outcomes import (
    CANCELLED as K_CANCELLED, FINISHED, GAVE_UP, LOST, REQUEUED, STARTED, STOPPED, Outcome,
)
from near.exitcodes import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK
from near.jobtable import (
    ACTIVE_STATES, CANCELLED, DONE, FAILED, PENDING, QUEUED, RUNNING, Change, JobRecord, JobTable,
)

DEFAULT_MAX_REQUEUES = 20

#: errors at dispatch that pass: the job stays pending and the dispatch is retried after a back-off
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.EAGAIN,
                              errno.ENOMEM, errno.EBUSY, errno.EINTR, errno.ETXTBSY})
BACKOFF_S = (1.0, 60.0)   # first and longest wait after a transient fault


def is_transient(err: BaseException) -> bool:
    """Whether an error at dispatch (or the OSError behind it) may pass by itself: retry later
    rather than fail the job."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__
    return err is not None and err.errno in TRANSIENT_ERRNOS


def backoff_s(faults: int) -> float:
    """Seconds to wait before dispatching again after ``faults`` transient faults in a row."""
    lo, hi = BACKOFF_S
    return min(hi, lo * 2 ** max(0, faults - 1))


Prune = Callable[[list[str], str], int]
"""The controller's ``prune(job_ids, reason) -> how many``, handed to every hook."""

Hook = Callable[[JobTable, Prune], None]
"""Called once per poll cycle with the table and the controller's prune (e.g. a search)."""


@dataclass
class View:
    """What a backend saw of its attempts, taken BEFORE their outcome files are read (so that an
    attempt that ended meanwhile has its file read too). ``jobs``: the active jobs to judge this
    cycle (fresh records); ``state``: the backend's own per-job facts for :meth:`Backend.explain`;
    ``readings``: job id -> (launch id, kind, reason) for attempts the controller ended itself,
    applied to that attempt's outcome (:func:`read_as`); ``owner_checked``: apply each change only
    while the job's lease holder is the one seen."""

    jobs: list[JobRecord] = field(default_factory=list)
    state: Any = None
    readings: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    owner_checked: bool = False


@dataclass
class Plan:
    """A backend's conclusions for the jobs the outcome files left active: table changes, and
    scheduler ids to stop (e.g. scancel)."""

    changes: list[Change] = field(default_factory=list)
    scancel: list[str] = field(default_factory=list)


class Backend(Protocol):
    """Where attempts run: the interface the controller drives (``local``, ``slurm``)."""

    name: str

    def look(self) -> View:
        """The jobs to judge this cycle and what the processes or the scheduler say of them."""

    def explain(self, jobs: Sequence[JobRecord], view: View) -> Plan:
        """Pure: the changes for ``jobs`` (as their outcome files left them) that ``view`` implies."""

    def dispatch(self) -> int:
        """Start (or submit) the jobs that can run now; returns how many."""

    def stop(self, job_ids: Sequence[str] | None, reason: str) -> None:
        """Stop these attempts (None: all of this controller's); their outcomes come back through
        later cycles, and ``reason`` is how the controller reads an interrupted one."""

    def hurry(self) -> None:
        """Shorten the grace of the attempts being stopped (a second Ctrl-C)."""

    def settle(self, plan: Plan) -> None:
        """Carry out a plan's scheduler side (scancel) once its changes were applied."""

    def recorded(self, change: Change) -> None:
        """A change of the plan was applied (to say so, or to free what the attempt held)."""

    def busy(self) -> bool:
        """Whether attempts of this backend are still running or being stopped."""

    def finished(self) -> bool:
        """Whether nothing is left for this controller to run or wait for."""

    def abandon(self) -> None:
        """Stop everything at once without recording (the table failed): files keep the outcomes."""


def run_hooks(hooks: Iterable[Hook], table: JobTable, prune: Prune) -> None:
    """Call each controller hook once (one poll cycle)."""
    for hook in hooks:
        hook(table, prune)


def max_requeues(job: JobRecord) -> int:
    """The job's cap on uncharged attempts."""
    return int((job.resources or {}).get("max_requeues", DEFAULT_MAX_REQUEUES))


def uncharged_attempts(job: JobRecord) -> int:
    """Attempts not held against ``max_attempts`` (interruptions, crashes with progress)."""
    return job.requeues + job.crashes - job.charged


def _over_cap(job: JobRecord, o: Outcome, why: str) -> Change | None:
    """FAILED when one more uncharged attempt would pass the job's ``max_requeues``."""
    cap = max_requeues(job)
    if uncharged_attempts(job) + 1 <= cap:
        return None
    return Change(job.job_id, FAILED, expect=(job.state,), exit_code=o.exit_code, requeues=1, progress=o.progress,
                  reason=f"{why}; gave up after {cap} uncharged attempts (max_requeues {cap})")


def _crash(job: JobRecord, o: Outcome, why: str) -> Change:
    advanced = o.progress is not None and o.progress != job.progress
    if advanced:
        capped = _over_cap(job, o, why)
        if capped is not None:
            return replace(capped, requeues=0, crashes=1)
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
            capped = _over_cap(job, o, o.reason or "interrupted (exit 3)")
            if capped is not None:
                return capped
            return Change(job.job_id, PENDING, expect=(job.state,), exit_code=code, requeues=1,
                          progress=o.progress, reason=o.reason or "interrupted (exit 3, resumable)")
        return _crash(job, o, o.reason or f"crashed ({_exit_words(code)})")
    if o.kind == REQUEUED:
        if job.state == QUEUED:  # already put back (the scheduler fallback saw it first)
            return Change(job.job_id, None, expect=(QUEUED,), progress=o.progress)
        capped = _over_cap(job, o, o.reason or "requeued by the scheduler")
        if capped is not None:
            return capped
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


def read_as(o: Outcome, kind: str, reason: str) -> Outcome:
    """The controller's reading of an attempt it ended itself (a stop, a time-out): an outcome that
    is not a finish (0) or a refused config (2) becomes ``kind`` with ``reason``."""
    if o.kind == FINISHED and o.exit_code in (EXIT_OK, EXIT_CONFIG):
        return o
    return o.but(kind=kind, reason=reason)


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
