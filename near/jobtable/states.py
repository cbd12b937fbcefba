"""Job states and the one table of legal transitions every write of the job table goes through.

``TRANSITIONS[from]`` is the set of states a job in ``from`` may move to; ``None`` stands for a job
that does not exist yet (``add``). Claims, compare-and-set transitions, resets, blocking and
unblocking all ask :func:`check_transition` first, so no code path can put a job into a state the
table does not allow.
"""

from __future__ import annotations

from typing import Iterable

from near.errors import TableError

PENDING, QUEUED, RUNNING, DONE, FAILED, BLOCKED, CANCELLED, PRUNED = (
    "pending", "queued", "running", "done", "failed", "blocked", "cancelled", "pruned",
)
STATES: tuple[str, ...] = (PENDING, QUEUED, RUNNING, DONE, FAILED, BLOCKED, CANCELLED, PRUNED)
ACTIVE_STATES = (QUEUED, RUNNING)
FINAL_STATES = (DONE, FAILED, CANCELLED, PRUNED)
# States whose dependents can never run until someone resets them.
BLOCKING_STATES = (FAILED, CANCELLED, BLOCKED, PRUNED)

# from -> the states it may go to. Active -> active covers a scheduler's own moves (a requeued job
# queued again, a running job's scheduler id recorded); pending -> done is the import of a run near
# did not launch (reason required); every final state goes back to pending only through a reset.
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({PENDING, BLOCKED}),
    PENDING: frozenset({QUEUED, RUNNING, BLOCKED, CANCELLED, FAILED, DONE}),
    QUEUED: frozenset({QUEUED, RUNNING, PENDING, DONE, FAILED, CANCELLED, BLOCKED, PRUNED}),
    RUNNING: frozenset({RUNNING, QUEUED, PENDING, DONE, FAILED, CANCELLED, BLOCKED, PRUNED}),
    BLOCKED: frozenset({PENDING, CANCELLED}),
    DONE: frozenset({PENDING}),
    FAILED: frozenset({PENDING}),
    CANCELLED: frozenset({PENDING}),
    PRUNED: frozenset({PENDING}),
}
# Transitions that must say why (an import names the folder the run came from).
REASON_REQUIRED: frozenset[tuple[str, str]] = frozenset({(PENDING, DONE)})


def legal(frm: str | None, to: str) -> bool:
    """Whether the transition table allows ``frm -> to``."""
    allowed = TRANSITIONS.get(frm)
    return allowed is not None and to in allowed


def check_transition(frm: str | None, to: str, reason: str | None = None, job_id: str = "") -> None:
    """Raise TableError unless ``frm -> to`` is in the transition table (with a reason where required)."""
    if not legal(frm, to):
        who = f"job {job_id}: " if job_id else ""
        raise TableError(f"{who}illegal transition {frm or 'new'} -> {to}; from {frm or 'new'} a job may go to "
                         f"{', '.join(sorted(TRANSITIONS.get(frm, ()))) or 'nothing'}")
    if (frm, to) in REASON_REQUIRED and not reason:
        raise TableError(f"job {job_id}: {frm} -> {to} needs a reason (e.g. 'imported from <dir>')")


def check_states(states: Iterable[str]) -> None:
    """Raise TableError naming any unknown state."""
    bad = [s for s in states if s not in STATES]
    if bad:
        raise TableError(f"unknown job state(s) {', '.join(map(repr, bad))}; states are {', '.join(STATES)}")
