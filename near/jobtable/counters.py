"""Counting in the job table: a job's attempt counters, and jobs counted by state.

Attempt accounting, in columns: ``attempts`` counts dispatches (a claim, and every requeue the
scheduler runs again); ``crashes`` and ``requeues`` count how attempts ended; ``charged`` counts the
attempts held against ``max_attempts`` (crashes whose checkpoint did not advance; the retry policy
is ``near.executors.base.record_outcome``), and an interruption the executor caused (``release``)
refunds the attempt; ``progress`` is the checkpoint progress seen at the last
recorded outcome. A change adds to them through :func:`counter_sets`, whether it moves the job
(a transition) or keeps its state (:func:`add_counts`)."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from near.jobtable.states import STATES

if TYPE_CHECKING:
    from near.jobtable.table import JobTable


def counter_sets(*, charge: int = 0, crashes: int = 0, requeues: int = 0, charged: int = 0,
                 progress: str | None = None) -> tuple[list[str], list[Any]]:
    """``SET`` clauses and their arguments that add to the attempt counters (none for zeros)."""
    sets: list[str] = []
    args: list[Any] = []
    if charge:
        sets.append("attempts=MAX(0, attempts+?)")
        args.append(charge)
    for col, n in (("crashes", crashes), ("requeues", requeues), ("charged", charged)):
        if n:
            sets.append(f"{col}={col}+?")
            args.append(n)
    if progress is not None:
        sets.append("progress=?")
        args.append(progress)
    return sets, args


def add_counts(c: sqlite3.Connection, job_id: str, now: float, *, scheduler_id: str | None = None,
               charge: int = 0, crashes: int = 0, requeues: int = 0, charged: int = 0,
               progress: str | None = None, **_ignored: Any) -> None:
    """Inside a write transaction: the bookkeeping of a change that keeps the state (no event:
    nothing moved)."""
    sets, args = counter_sets(charge=charge, crashes=crashes, requeues=requeues, charged=charged, progress=progress)
    c.execute(f"UPDATE jobs SET {', '.join(sets + ['scheduler_id=COALESCE(?, scheduler_id)', 'updated=?'])} "
              "WHERE job_id=?", args + [scheduler_id, now, job_id])


def counts(table: JobTable) -> dict[str, int]:
    """Number of jobs per state (every state present as a key)."""
    out = {s: 0 for s in STATES}
    out.update(table._conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    return out
