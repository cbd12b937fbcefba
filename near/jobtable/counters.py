"""Counting in the job table: a job's attempt counters, jobs per state, and the tallies (jobs
per stage or parameter value and state) that ``status`` reads instead of every row.

Attempt accounting, in columns: ``attempts`` counts dispatches (a claim, and every requeue the
scheduler runs again); ``crashes`` and ``requeues`` count how attempts ended; ``charged`` counts the
attempts held against ``max_attempts`` (crashes whose checkpoint did not advance; the retry policy
is ``near.executors.base.record_outcome``), and an interruption the executor caused (``release``)
refunds the attempt; ``progress`` is the checkpoint progress seen at the last
recorded outcome. A change adds to them through :func:`counter_sets`, whether it moves the job
(a transition) or keeps its state (:func:`add_counts`)."""

from __future__ import annotations

import json
import math
import sqlite3
from typing import TYPE_CHECKING, Any, Container, Sequence

from near.errors import TableError
from near.jobtable.connection import reads
from near.jobtable.queries import check, unknown_state
from near.jobtable.records import JobSpec
from near.jobtable.schema import RECOUNT, TALLY_COUNT
from near.jobtable.states import BLOCKED, PENDING, STATES

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


@reads
def counts(table: JobTable) -> dict[str, int]:
    """Number of jobs per state (every state present as a key); a job in a state near does not
    know raises TableError naming it."""
    out = {s: 0 for s in STATES}
    for state, n in table._conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
        if state not in out:
            raise unknown_state(table, state)
        out[state] = n
    return out


# ---------------------------------------------------------------------- tallies
Tally = tuple[str, str, Any, str]  # (params key or '' for the stage, json type, value, state)


def json_tally(value: Any) -> tuple[str, Any] | None:
    """``(type, value)`` as SQLite's json_each reports ``value`` once encoded as JSON, for the
    plain scalars near's params hold; None for a value SQLite must read itself (lists, dicts,
    huge integers, non-finite floats, subclasses)."""
    t = type(value)
    if t is str:
        return "text", value
    if t is bool:
        return ("true", 1) if value else ("false", 0)
    if t is int:
        return ("integer", value) if -(1 << 63) <= value < (1 << 63) else None
    if t is float:
        return ("real", value) if math.isfinite(value) else None
    return None


def tally_new(jobs: Sequence[JobSpec], blocked: Container[str], first_seq: int,
              ) -> tuple[dict[Tally, list[int]], list[int]]:
    """The tallies of ``jobs`` about to be inserted with seq ``first_seq``, ``first_seq + 1``, ...
    (blocked if their id is in ``blocked``, else pending): tally -> [jobs, first seq], and the seqs
    of the jobs whose params SQLite must count itself (see :func:`json_tally`)."""
    counted: dict[Tally, list[int]] = {}
    sql_seqs: list[int] = []
    for seq, job in enumerate(jobs, first_seq):
        state = BLOCKED if job.job_id in blocked else PENDING
        tallies: list[Tally] = [("", "text", job.stage, state)]
        for key, value in job.params.items():
            if value is None:
                continue
            tally = json_tally(value)
            if tally is None:
                sql_seqs.append(seq)
                tallies = tallies[:1]
                break
            tallies.append((key, *tally, state))
        for tally in tallies:
            entry = counted.get(tally)
            if entry is None:
                counted[tally] = [1, seq]
            else:
                entry[0] += 1
    return counted, sql_seqs


def add_tallies(c: sqlite3.Connection, counted: dict[Tally, list[int]], sql_seqs: list[int]) -> None:
    """Inside :func:`near.jobtable.adding.add`'s transaction: add the new jobs' tallies
    (``counted``: tally -> [jobs, first seq]), and let SQLite count the params of the jobs at
    ``sql_seqs`` (values :func:`json_tally` leaves to it)."""
    upsert = ("INSERT INTO tallies(key, type, value, state, n, first) {} "
              "ON CONFLICT DO UPDATE SET n = n + excluded.n, first = MIN(first, excluded.first)")
    c.executemany(upsert.format("VALUES (?, ?, ?, ?, ?, ?)"),
                  [(*tally, n, first) for tally, (n, first) in counted.items()])
    if sql_seqs:
        c.execute(upsert.format(
            "SELECT p.key, p.type, p.value, j.state, COUNT(*), MIN(j.seq) FROM jobs j, json_each(j.params) p "
            "WHERE j.seq IN (SELECT value FROM json_each(?)) AND p.type != 'null' GROUP BY 1, 2, 3, 4"),
            (json.dumps(sql_seqs),))


def recount(table: JobTable) -> bool:
    """Count every job's tallies again (a writer, after a migration or after something other than
    near edited jobs). False when it cannot (a job's params are not JSON, the disk is full): the
    tallies stay marked stale, and readers count from the jobs, naming the bad row."""
    try:
        with table._tx() as c:
            for stmt in RECOUNT:
                c.execute(stmt)
    except TableError:
        return False
    return True


def _shown(kind: str, value: Any) -> str:
    """A tally's value as ``status`` shows it: ``str()`` of the decoded JSON value."""
    if kind in ("true", "false"):
        return str(kind == "true")
    if kind in ("array", "object"):
        return str(json.loads(value))
    return str(value)


def _stored_tallies(table: JobTable) -> list[tuple] | None:
    """The stored tallies (rows as in :func:`_tally_rows`) when they agree with the jobs' states,
    else None: not stored yet, marked stale, or jobs inserted by something other than near (an
    INSERT outside ``add`` fires no trigger, so only the totals can tell)."""
    conn = table._conn
    stored = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='tallies'").fetchone()
    if not stored or "tallies" in table.meta():
        return None
    rows = conn.execute("SELECT key, type, value, state, n, first FROM tallies WHERE n != 0").fetchall()
    by_state: dict[str, int] = {}
    for key, _kind, _value, state, n, _first in rows:
        if key == "":
            by_state[state] = by_state.get(state, 0) + n
    return rows if by_state == {s: n for s, n in counts(table).items() if n} else None


def tallies_agree(table: JobTable) -> bool:
    """Whether the stored tallies can be trusted (see :func:`_stored_tallies`); a writer that finds
    they cannot recounts them, so readers stay fast."""
    try:
        return _stored_tallies(table) is not None
    except TableError:  # a job in a state near does not know: its readers name it
        return False


def _tally_rows(table: JobTable) -> list[tuple]:
    """``(key, type, value, state, n, first)`` of every tally: the stored ones when they agree
    with the jobs' states, else counted from the jobs (a table not yet upgraded, opened
    read-only, or edited by something other than near)."""
    rows = _stored_tallies(table)
    if rows is not None:
        return rows
    try:
        return table._conn.execute(TALLY_COUNT).fetchall()
    except sqlite3.OperationalError:
        check(table)  # a row whose params are not JSON: name it
        raise


@reads
def by_axis(table: JobTable, axes: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """``stage`` and each axis (default: the sweep's) -> value (as text) -> state -> number of
    jobs; values in the order the sweep introduced them, jobs without the axis left out."""
    axes = table.axes() if axes is None else list(axes)
    keys = {"": "stage", **{a: a for a in axes if a != "stage"}}
    values: dict[str, dict[str, tuple[int, dict[str, int]]]] = {name: {} for name in keys.values()}
    for key, kind, value, state, n, first in _tally_rows(table):
        name = keys.get(key)
        if name is None or n == 0:
            continue
        shown = _shown(kind, value)
        prev_first, row = values[name].get(shown, (first, {}))
        row[state] = row.get(state, 0) + n
        values[name][shown] = (min(prev_first, first), row)
    return {name: {v: row for v, (_, row) in sorted(vals.items(), key=lambda kv: kv[1][0])}
            for name, vals in values.items()}
