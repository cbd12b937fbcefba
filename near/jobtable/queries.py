"""Reading the job table: single jobs, lists of jobs, dependencies and histories (no writes).

Each function takes the :class:`~near.jobtable.table.JobTable` as its first argument and is bound
as a method of it."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from near.errors import TableError
from near.jobtable.connection import now as _now
from near.jobtable.connection import reads
from near.jobtable.records import Event, JobBrief, JobRecord, run_dir_for
from near.jobtable.schema import ATTENTION, JOB_COLUMNS
from near.jobtable.states import STATES, check_states

if TYPE_CHECKING:
    from near.jobtable.table import JobTable

CHUNK = 500  # ids per ``IN (...)`` list: well below SQLite's limit on bound parameters


def chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    """``ids`` in lists of at most :data:`CHUNK`."""
    for i in range(0, len(ids), CHUNK):
        yield list(ids[i : i + CHUNK])


def marks(n: int) -> str:
    """``?,?,...`` for ``n`` bound parameters."""
    return ",".join("?" * n)


def corrupt(table: JobTable, job_id: str, column: str, err: Exception) -> TableError:
    """The error for a row whose JSON column cannot be decoded, naming the file and the job."""
    return TableError(f"{table.path}: corrupt job table: job {job_id} has invalid {column} JSON ({err}); "
                      "restore the file from a backup or remove the sweep folder")


def unknown_state(table: JobTable, state: Any, job_id: str | None = None) -> TableError:
    """The error for a job in ``state``, which is not one of :data:`STATES` (default: the first
    such job)."""
    if job_id is None:
        row = table._conn.execute("SELECT job_id FROM jobs WHERE state IS ? ORDER BY seq LIMIT 1", (state,)).fetchone()
        job_id = row[0] if row else "?"
    return TableError(f"{table.path}: corrupt job table: job {job_id} is in unknown state {state!r} "
                      f"(states are {', '.join(STATES)}); restore the file from a backup or remove the sweep folder")


def states_of(c: sqlite3.Connection, ids: list[str]) -> dict[str, str]:
    """Job id -> state, for those of ``ids`` in the table."""
    out: dict[str, str] = {}
    for chunk in chunks(ids):
        out.update(c.execute(f"SELECT job_id, state FROM jobs WHERE job_id IN ({marks(len(chunk))})", chunk))
    return out


@reads
def deps_map(table: JobTable, ids: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """Job id -> (reference name -> job id it depends on), for ``ids`` or every job."""
    out: dict[str, dict[str, str]] = {}
    if ids is None:
        rows = table._conn.execute("SELECT job_id, ref, dep_job_id FROM deps").fetchall()
    else:
        rows = []
        for chunk in chunks(ids):
            rows += table._conn.execute(
                f"SELECT job_id, ref, dep_job_id FROM deps WHERE job_id IN ({marks(len(chunk))})", chunk,
            ).fetchall()
    for jid, ref, dep in rows:
        out.setdefault(jid, {})[ref] = dep
    return out


def records(table: JobTable, rows: list[tuple], deps: dict[str, dict[str, str]] | None = None) -> list[JobRecord]:
    """Decode rows selected as :data:`JOB_COLUMNS` into records; a corrupt row raises TableError."""
    if deps is None:
        deps = deps_map(table, [r[0] for r in rows]) if len(rows) < 2000 else deps_map(table)
    out = []
    loads = json.loads
    for r in rows:
        (job_id, sweep, stage, template, _cmd, params, resources, workdir, point, state, reason,
         exit_code, attempts, max_attempts, scheduler_id, lease_owner, lease_expires, created,
         updated, started, finished, crashes, requeues, charged, progress) = r
        try:
            params, resources = loads(params), loads(resources)
        except (ValueError, TypeError) as err:
            raise corrupt(table, job_id, "params" if not isinstance(params, dict) else "resources", err) from None
        if state not in STATES:
            raise unknown_state(table, state, job_id)
        out.append(JobRecord(
            job_id=job_id, sweep=sweep, stage=stage, command_template=template,
            params=params, resources=resources, workdir=workdir, point=point,
            state=state, reason=reason, exit_code=exit_code, attempts=attempts,
            max_attempts=max_attempts, scheduler_id=scheduler_id, lease_owner=lease_owner,
            lease_expires=lease_expires, created=created, updated=updated, started=started,
            finished=finished, run_dir=run_dir_for(table.exp_dir, job_id), exp_dir=table.exp_dir,
            deps=deps.get(job_id, {}), crashes=crashes, requeues=requeues, charged=charged, progress=progress,
        ))
    return out


@reads
def check(table: JobTable) -> None:
    """Raise TableError naming the first job whose params or resources are not valid JSON (one
    scan in SQLite; run before dispatching anything, so a corrupt row stops a run at once)."""
    row = table._conn.execute(
        "SELECT job_id, json_valid(params), params, resources FROM jobs "
        "WHERE NOT json_valid(params) OR NOT json_valid(resources) ORDER BY seq LIMIT 1").fetchone()
    if row is not None:
        column, text = ("params", row[2]) if not row[1] else ("resources", row[3])
        try:
            json.loads(text)
        except ValueError as err:
            raise corrupt(table, row[0], column, err) from None
        raise corrupt(table, row[0], column, ValueError("not JSON"))


@reads(job=True)
def get(table: JobTable, job_id: str) -> JobRecord:
    """The job with this exact id; TableError if absent."""
    rows = table._conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id=?", (job_id,)).fetchall()
    if not rows:
        raise TableError(f"{table.path}: no job {job_id}")
    return records(table, rows)[0]


@reads(job=True)
def find(table: JobTable, prefix: str) -> JobRecord:
    """The job whose id starts with ``prefix`` (must be unique)."""
    ids = [r[0] for r in table._conn.execute(
        "SELECT job_id FROM jobs WHERE job_id >= ? AND job_id < ? LIMIT 3", (prefix, prefix + "\uffff")
    )]
    if not ids:
        raise TableError(f"{table.path}: no job matches {prefix!r}")
    if len(ids) > 1 and prefix not in ids:
        raise TableError(f"{table.path}: {prefix!r} is ambiguous ({', '.join(ids)}, ...)")
    return get(table, prefix if prefix in ids else ids[0])


@reads
def jobs(table: JobTable, states: Iterable[str] | None = None, stages: Iterable[str] | None = None,
         ) -> list[JobRecord]:
    """All jobs (optionally only those in ``states`` / ``stages``), in insertion order."""
    q, args = f"SELECT {JOB_COLUMNS} FROM jobs", []
    where = []
    if states is not None:
        states = list(states)
        check_states(states)
        where.append(f"state IN ({marks(len(states))})")
        args += states
    if stages is not None:
        stages = list(stages)
        where.append(f"stage IN ({marks(len(stages))})")
        args += stages
    if where:
        q += " WHERE " + " AND ".join(where)
    return records(table, table._conn.execute(q + " ORDER BY seq", args).fetchall())


@reads
def briefs(table: JobTable) -> list[JobBrief]:
    """Every job's id, state, scheduler id and dependencies, in insertion order: what a
    reconciliation needs of the whole table, without decoding full records."""
    deps = deps_map(table)
    return [JobBrief(j, s, sid, deps.get(j, {})) for j, s, sid in
            table._conn.execute("SELECT job_id, state, scheduler_id FROM jobs ORDER BY seq")]


@reads
def leased(table: JobTable) -> list[tuple[str, str, float]]:
    """``(job_id, lease_owner, lease_expires)`` of active jobs held under a lease."""
    return table._conn.execute(
        "SELECT job_id, lease_owner, lease_expires FROM jobs WHERE state IN ('running','queued') "
        "AND lease_expires IS NOT NULL"
    ).fetchall()


@reads
def expired(table: JobTable, now: float | None = None, *, exclude_owner: str | None = None) -> list[JobRecord]:
    """Active jobs whose lease expired (their worker or controller died), except ``exclude_owner``'s
    (a live caller knows its own jobs run, even if it was too slow to renew their leases)."""
    now = _now() if now is None else now
    rows = table._conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('running','queued') AND lease_expires IS NOT NULL "
        "AND lease_expires < ? AND lease_owner IS NOT ?", (now, exclude_owner),
    ).fetchall()
    return records(table, rows)


@reads
def attention(table: JobTable, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """The jobs that need a look (neither pending nor done, or with a reason), in insertion order,
    at most ``limit`` of them, as plain dicts; and how many there are in all."""
    total = table._conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {ATTENTION}").fetchone()[0]
    rows = table._conn.execute(
        "SELECT job_id, stage, state, reason, exit_code, attempts, max_attempts, scheduler_id, params "
        f"FROM jobs WHERE {ATTENTION} ORDER BY seq LIMIT ?", (-1 if limit is None else limit,)).fetchall()
    out = []
    for job_id, stage, state, reason, exit_code, attempts, max_attempts, scheduler_id, params in rows:
        try:
            params = json.loads(params)
        except (ValueError, TypeError) as err:
            raise corrupt(table, job_id, "params", err) from None
        if state not in STATES:
            raise unknown_state(table, state, job_id)
        out.append({"job_id": job_id, "stage": stage, "state": state, "reason": reason, "exit_code": exit_code,
                    "attempts": attempts, "max_attempts": max_attempts, "scheduler_id": scheduler_id,
                    "params": params, "run_dir": run_dir_for(table.exp_dir, job_id)})
    return out, total


@reads
def size(table: JobTable) -> int:
    """Number of jobs (``len(table)``)."""
    return table._conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]


@reads(job=True)
def history(table: JobTable, job_id: str) -> list[Event]:
    """The job's state changes, oldest first (the first entry is its creation)."""
    job = get(table, job_id)
    events = [Event(job_id, job.created, None, "created", None, None)]
    events += [Event(*r) for r in table._conn.execute(
        "SELECT job_id, ts, from_state, to_state, reason, detail FROM events WHERE job_id=? ORDER BY id",
        (job_id,),
    )]
    return events


@reads(job=True)
def claims_since_reset(table: JobTable, job_id: str) -> int:
    """How many times the job was claimed (pending -> running/queued) since its last reset, or
    since it was added: 1 right after its first dispatch, more once an earlier attempt existed
    (one that was stopped, interrupted or crashed, whatever its attempt counter says now)."""
    return table._conn.execute(
        "SELECT COUNT(*) FROM events WHERE job_id=? AND from_state='pending' AND to_state IN ('running','queued') "
        "AND id > COALESCE((SELECT MAX(id) FROM events WHERE job_id=? AND reason='reset'), 0)",
        (job_id, job_id),
    ).fetchone()[0]


@reads
def histories(table: JobTable, job_ids: Iterable[str]) -> dict[str, list[Event]]:
    """The recorded state changes (events) of many jobs, oldest first, in few queries (unlike
    :func:`history`, without the synthetic creation entry). Jobs without events map to []."""
    ids = list(dict.fromkeys(job_ids))
    out: dict[str, list[Event]] = {j: [] for j in ids}
    for chunk in chunks(ids):
        for r in table._conn.execute(
            "SELECT job_id, ts, from_state, to_state, reason, detail FROM events "
            f"WHERE job_id IN ({marks(len(chunk))}) ORDER BY id", chunk,
        ):
            out[r[0]].append(Event(*r))
    return out


@reads(job=True)
def deps(table: JobTable, job_id: str) -> dict[str, str]:
    """Reference name -> job id this job depends on."""
    return deps_map(table, [job_id]).get(job_id, {})


@reads(job=True)
def dependents(table: JobTable, job_id: str) -> list[str]:
    """Ids of the jobs that depend directly on ``job_id``."""
    return [r[0] for r in table._conn.execute("SELECT job_id FROM deps WHERE dep_job_id=?", (job_id,))]


@reads
def folded(table: JobTable, job_ids: Iterable[str] | None = None) -> dict[str, set[str]]:
    """Job id -> names of the node outcomes already recorded (folding one again changes nothing)."""
    out: dict[str, set[str]] = {}
    if job_ids is None:
        rows = table._conn.execute("SELECT job_id, name FROM outcomes").fetchall()
    else:
        rows = []
        for chunk in chunks(list(job_ids)):
            rows += table._conn.execute(
                f"SELECT job_id, name FROM outcomes WHERE job_id IN ({marks(len(chunk))})", chunk
            ).fetchall()
    for jid, name in rows:
        out.setdefault(jid, set()).add(name)
    return out
