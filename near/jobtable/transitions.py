"""Every state change of the job table: the one write path.

Each change is a compare-and-set inside ``BEGIN IMMEDIATE`` and asks
:func:`near.jobtable.states.check_transition` before it writes, so no code path can put a job into
a state the transition table does not allow. Each function takes the
:class:`~near.jobtable.table.JobTable` as its first argument and is bound as a method of it."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from near.errors import TableError
from near.jobtable.connection import now as _now
from near.jobtable.counters import add_counts, counter_sets
from near.jobtable.queries import chunks, expired, marks, records
from near.jobtable.records import Change, JobRecord
from near.jobtable.schema import JOB_COLUMNS
from near.jobtable.states import (
    ACTIVE_STATES, BLOCKED, BLOCKING_STATES, CANCELLED, DONE, FAILED, FINAL_STATES, PENDING, PRUNED, QUEUED,
    RUNNING, check_states, check_transition,
)

if TYPE_CHECKING:
    from near.jobtable.table import JobTable


def event(c: sqlite3.Connection, job_id: str, ts: float, frm: str | None, to: str,
          reason: str | None, detail: str | None = None) -> None:
    """Inside a write transaction: record one state change in ``events``."""
    c.execute(
        "INSERT INTO events(job_id, ts, from_state, to_state, reason, detail) VALUES (?,?,?,?,?,?)",
        (job_id, ts, frm, to, reason, detail),
    )


def claim(
    table: JobTable,
    owner: str,
    limit: int = 1,
    lease_s: float | None = 60.0,
    *,
    to_state: str = RUNNING,
    stages: Iterable[str] | None = None,
    job_ids: Iterable[str] | None = None,
) -> list[JobRecord]:
    """Atomically take up to ``limit`` pending jobs whose dependencies are all done.

    They move to ``to_state`` (running, or queued for a scheduler) owned by ``owner`` with a lease
    of ``lease_s`` seconds (None: no lease, e.g. SLURM owns liveness), attempts+1. Never returns
    a job another claim returned, across processes. Oldest jobs first.
    """
    if to_state not in ACTIVE_STATES:
        raise TableError(f"claim: to_state must be one of {ACTIVE_STATES}, not {to_state!r}")
    check_transition(PENDING, to_state)
    now = _now()
    expires = None if lease_s is None else now + lease_s
    where, args = ["j.state='pending'"], []
    if stages is not None:
        stages = list(stages)
        where.append(f"j.stage IN ({marks(len(stages))})")
        args += stages
    if job_ids is not None:
        job_ids = list(job_ids)
        if not job_ids:
            return []
        where.append(f"j.job_id IN ({marks(len(job_ids))})")
        args += job_ids
    with table._tx() as c:
        rows = c.execute(
            f"UPDATE jobs SET state=?, lease_owner=?, lease_expires=?, attempts=attempts+1, updated=?, "
            f"reason=NULL, exit_code=NULL, started=CASE WHEN ?='running' THEN ? ELSE started END "
            f"WHERE job_id IN (SELECT j.job_id FROM jobs j WHERE {' AND '.join(where)} AND NOT EXISTS ("
            f"SELECT 1 FROM deps d JOIN jobs p ON p.job_id=d.dep_job_id "
            f"WHERE d.job_id=j.job_id AND p.state!='done') ORDER BY j.seq LIMIT ?) "
            f"RETURNING {JOB_COLUMNS}",
            [to_state, owner, expires, now, to_state, now] + args + [int(limit)],
        ).fetchall()
        for r in rows:
            event(c, r[0], now, PENDING, to_state, None, f"owner={owner}")
    try:
        return records(table, rows)  # decoded after the commit: the write lock is held no longer
    except TableError:
        # a corrupt row: put the claimed jobs back rather than leave them running under a
        # controller that cannot start them
        with table._tx() as c:
            for r in rows:
                apply(table, c, r[0], to_state, PENDING, _now(), reason="claim undone: corrupt row", charge=-1)
        raise


def heartbeat(table: JobTable, owner: str, job_ids: Iterable[str], lease_s: float = 60.0) -> set[str]:
    """Extend the leases ``owner`` holds on ``job_ids``; returns the ids it still owns."""
    ids = list(job_ids)
    if not ids:
        return set()
    now = _now()
    with table._tx() as c:
        rows = c.execute(
            f"UPDATE jobs SET lease_expires=?, updated=? WHERE lease_owner=? AND state IN ('running','queued') "
            f"AND job_id IN ({marks(len(ids))}) RETURNING job_id",
            [now + lease_s, now, owner] + ids,
        ).fetchall()
    return {r[0] for r in rows}


def transition(
    table: JobTable,
    job_id: str,
    to_state: str,
    *,
    reason: str | None = None,
    exit_code: int | None = None,
    scheduler_id: str | None = None,
    expect: Iterable[str] | None = None,
    owner: str | None = None,
    detail: str | None = None,
    charge: int = 0,
    new_owner: str | None = None,
    lease_s: float | None = None,
) -> bool:
    """Compare-and-set one job's state. Returns False (and changes nothing) if the job is not in
    one of ``expect`` (default: any state) or, with ``owner``, not leased by ``owner``.

    Side effects, in the same transaction: timestamps (started on running, finished on
    done/failed/cancelled), the lease is dropped when leaving running/queued, attempts += ``charge``
    (+1 automatically when going from pending to running/queued), dependents of a job going to
    failed/cancelled become blocked (transitively), an event row is written. Going to an active
    state, ``new_owner``/``lease_s`` set the lease holder and its expiry. A move the transition
    table does not allow raises TableError.
    """
    check_states([to_state])
    expect = list(expect) if expect is not None else None
    if expect is not None:
        check_states(expect)
    with table._tx() as c:
        return cas(table, c, job_id, to_state, _now(), expect=expect, owner=owner, reason=reason,
                   exit_code=exit_code, scheduler_id=scheduler_id, detail=detail, charge=charge,
                   new_owner=new_owner, lease_s=lease_s)


def transition_many(table: JobTable, changes: Iterable[Change], *, batch: int = 2000) -> list[bool]:
    """:func:`transition` for many jobs, ``batch`` changes per ``BEGIN IMMEDIATE`` transaction
    (one commit instead of one per job). Each change is still its own compare-and-set on its
    ``expect`` states, applied in order with the same side effects (events, blocked
    dependents). Returns, per change, whether it applied. An unknown job raises TableError and
    rolls back the changes of its batch (earlier batches stay committed)."""
    changes = list(changes)
    for ch in changes:
        check_states(([ch.to_state] if ch.to_state is not None else []) + list(ch.expect or ()))
    out: list[bool] = []
    batch = max(1, batch)
    for i in range(0, len(changes), batch):
        part = changes[i : i + batch]
        with table._tx() as c:
            now = _now()
            # jobs that have dependents at all (deps do not change here): the others skip the
            # query that blocks dependents
            parents: set[str] = set()
            for chunk in chunks(list({ch.job_id for ch in part if ch.to_state in BLOCKING_STATES})):
                parents.update(r[0] for r in c.execute(
                    f"SELECT DISTINCT dep_job_id FROM deps WHERE dep_job_id IN ({marks(len(chunk))})", chunk))
            out += [
                cas(table, c, ch.job_id, ch.to_state, now, expect=ch.expect, owner=ch.owner, reason=ch.reason,
                    exit_code=ch.exit_code, scheduler_id=ch.scheduler_id, detail=ch.detail,
                    charge=ch.charge, has_dependents=ch.job_id in parents, crashes=ch.crashes,
                    requeues=ch.requeues, charged=ch.charged, progress=ch.progress, outcome=ch.outcome)
                for ch in part
            ]
    return out


def cas(table: JobTable, c: sqlite3.Connection, job_id: str, to_state: str | None, now: float, *,
        expect: Sequence[str] | None, owner: str | None, outcome: str | None = None, **change: Any) -> bool:
    """Inside a write transaction: apply the change if the job is in ``expect`` (and leased by
    ``owner``) and its ``outcome`` was not folded before; False otherwise."""
    row = c.execute("SELECT state, lease_owner FROM jobs WHERE job_id=?", (job_id,)).fetchone()
    if row is None:
        raise TableError(f"{table.path}: no job {job_id}")
    frm, lease_owner = row
    if expect is not None and frm not in expect:
        return False
    if owner is not None and lease_owner != owner:
        return False
    if outcome is not None:
        if c.execute("SELECT 1 FROM outcomes WHERE job_id=? AND name=?", (job_id, outcome)).fetchone():
            return False
        c.execute("INSERT INTO outcomes(job_id, name) VALUES (?, ?)", (job_id, outcome))
    if to_state is None:
        add_counts(c, job_id, now, **change)
    else:
        apply(table, c, job_id, frm, to_state, now, **change)
    return True


def apply(table: JobTable, c: sqlite3.Connection, job_id: str, frm: str, to: str, now: float, *,
          reason: str | None, exit_code: int | None = None, scheduler_id: str | None = None,
          detail: str | None = None, charge: int = 0, new_owner: str | None = None,
          lease_s: float | None = None, has_dependents: bool = True, crashes: int = 0,
          requeues: int = 0, charged: int = 0, progress: str | None = None) -> None:
    """Inside a write transaction: move the job ``frm -> to`` (checked against the transition
    table) with its time stamps, lease, counters and event; dependents of a job that can no
    longer finish become blocked."""
    check_transition(frm, to, reason, job_id)
    sets = ["state=?", "reason=?", "updated=?"]
    args: list[Any] = [to, reason, now]
    if exit_code is not None or to in (PENDING, QUEUED, RUNNING):
        sets.append("exit_code=?")
        args.append(exit_code)
    if scheduler_id is not None:
        sets.append("scheduler_id=?")
        args.append(scheduler_id)
    if to == RUNNING and frm != RUNNING:
        sets.append("started=?")
        args.append(now)
    if to in FINAL_STATES:
        sets.append("finished=?")
        args.append(now)
    elif to in (PENDING, QUEUED, RUNNING):
        sets.append("finished=NULL")
    if frm == PENDING and to in ACTIVE_STATES:
        charge += 1
    more_sets, more_args = counter_sets(charge=charge, crashes=crashes, requeues=requeues, charged=charged,
                                        progress=progress)
    sets += more_sets
    args += more_args
    if to in ACTIVE_STATES:
        if new_owner is not None:
            sets.append("lease_owner=?")
            args.append(new_owner)
        if lease_s is not None:
            sets.append("lease_expires=?")
            args.append(now + lease_s)
    else:
        sets.append("lease_owner=NULL, lease_expires=NULL")
    c.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE job_id=?", args + [job_id])
    ev_detail = detail
    if exit_code is not None:
        ev_detail = f"exit_code={exit_code}" + (f"; {detail}" if detail else "")
    event(c, job_id, now, frm, to, reason, ev_detail)
    if to in BLOCKING_STATES and frm not in BLOCKING_STATES and has_dependents:
        block_dependents(c, job_id, now, f"dependency {job_id} {to}")


def block_dependents(c: sqlite3.Connection, job_id: str, now: float, reason: str) -> None:
    """Inside a write transaction: pending jobs that depend on ``job_id``, transitively, -> blocked."""
    check_transition(PENDING, BLOCKED)
    frontier = [job_id]
    while frontier:
        nxt = []
        for jid in frontier:
            rows = c.execute(
                "UPDATE jobs SET state='blocked', reason=?, updated=? WHERE state='pending' AND job_id IN "
                "(SELECT job_id FROM deps WHERE dep_job_id=?) RETURNING job_id",
                (reason, now, jid),
            ).fetchall()
            for (dep,) in rows:
                event(c, dep, now, PENDING, BLOCKED, reason)
                nxt.append(dep)
        frontier = nxt


def unblock(c: sqlite3.Connection, now: float) -> int:
    """Inside a write transaction: blocked jobs none of whose dependencies blocks any more ->
    pending (repeated until nothing changes); returns how many."""
    check_transition(BLOCKED, PENDING)
    changed = 0
    blocking = ",".join(f"'{s}'" for s in BLOCKING_STATES)
    while True:
        rows = c.execute(
            "SELECT j.job_id FROM jobs j WHERE j.state='blocked' AND NOT EXISTS (SELECT 1 FROM deps d "
            "JOIN jobs p ON p.job_id=d.dep_job_id WHERE d.job_id=j.job_id "
            f"AND p.state IN ({blocking}))"
        ).fetchall()
        if not rows:
            return changed
        for (job_id,) in rows:
            c.execute("UPDATE jobs SET state='pending', reason=NULL, updated=? WHERE job_id=?", (now, job_id))
            event(c, job_id, now, BLOCKED, PENDING, "unblocked: dependencies no longer failed")
            changed += 1


# conveniences -------------------------------------------------------------
def mark_queued(table: JobTable, job_id: str, scheduler_id: str | None = None, *, owner: str | None = None,
                expect: Iterable[str] = (PENDING,)) -> bool:
    """pending -> queued (submitted to a scheduler), recording its scheduler id."""
    return transition(table, job_id, QUEUED, scheduler_id=scheduler_id, expect=expect, owner=owner)


def mark_running(table: JobTable, job_id: str, *, owner: str | None = None, scheduler_id: str | None = None,
                 lease_s: float | None = None, expect: Iterable[str] = (PENDING, QUEUED, RUNNING)) -> bool:
    """-> running (e.g. a SLURM job started); with ``owner``/``lease_s`` it takes the lease."""
    return transition(table, job_id, RUNNING, scheduler_id=scheduler_id, expect=expect,
                      new_owner=owner, lease_s=lease_s, detail=f"owner={owner}" if owner else None)


def mark_done(table: JobTable, job_id: str, *, owner: str | None = None, exit_code: int | None = 0,
              expect: Iterable[str] = ACTIVE_STATES) -> bool:
    """running/queued -> done."""
    return transition(table, job_id, DONE, exit_code=exit_code, expect=expect, owner=owner)


def mark_failed(table: JobTable, job_id: str, reason: str, *, exit_code: int | None = None,
                owner: str | None = None, expect: Iterable[str] = ACTIVE_STATES + (PENDING,)) -> bool:
    """-> failed with a reason (e.g. ``exit code 1``, ``timeout``); dependents become blocked."""
    return transition(table, job_id, FAILED, reason=reason, exit_code=exit_code, expect=expect, owner=owner)


def mark_cancelled(table: JobTable, job_id: str, reason: str = "cancelled", *,
                   expect: Iterable[str] = (PENDING, QUEUED, RUNNING, BLOCKED)) -> bool:
    """-> cancelled; dependents become blocked."""
    return transition(table, job_id, CANCELLED, reason=reason, expect=expect)


def release(table: JobTable, job_id: str, reason: str = "interrupted", *, owner: str | None = None,
            refund: bool = True, exit_code: int | None = None) -> bool:
    """Put an active job back to pending after an interruption the executor caused (Ctrl-C,
    SIGTERM, preemption): no attempt charged when ``refund``."""
    return transition(table, job_id, PENDING, reason=reason, owner=owner, expect=ACTIVE_STATES,
                      charge=-1 if refund else 0, exit_code=exit_code)


def prune(table: JobTable, job_ids: Iterable[str], reason: str) -> int:
    """Active jobs -> pruned (a search stopped them early; ``reason`` says at which step and value).
    Returns how many changed; jobs no longer active are left alone."""
    changes = [Change(j, PRUNED, expect=ACTIVE_STATES, reason=reason) for j in job_ids]
    return sum(transition_many(table, changes))


def cancel(table: JobTable, job_ids: Iterable[str], reason: str = "cancelled by user") -> int:
    """Cancel the given jobs that are not yet final; dependents become blocked."""
    return sum(mark_cancelled(table, jid, reason) for jid in job_ids)


def requeue_stale(table: JobTable, now: float | None = None, *, exclude_owner: str | None = None,
                  decide: Callable[[JobRecord], Change] | None = None) -> list[tuple[str, str]]:
    """Jobs whose lease expired: each gets the change ``decide(job)`` returns (the executors'
    retry policy; by default back to pending, or failed once ``attempts >= max_attempts``),
    applied only if its lease is still the expired one. Returns ``[(job_id, new_state), ...]``."""
    now = _now() if now is None else now
    stale = expired(table, now, exclude_owner=exclude_owner)
    if not stale:
        return []

    def default(job: JobRecord) -> Change:
        why = f"lease expired (worker {job.lease_owner} lost)"
        if job.attempts >= job.max_attempts:
            return Change(job.job_id, FAILED, reason=f"{why} after {job.attempts} attempts")
        return Change(job.job_id, PENDING, reason=f"{why}; attempt {job.attempts}/{job.max_attempts}")

    out = []
    with table._tx() as c:
        for job in stale:
            ch = (decide or default)(job)
            row = c.execute("SELECT state, lease_owner, lease_expires FROM jobs WHERE job_id=?",
                            (job.job_id,)).fetchone()
            if row != (job.state, job.lease_owner, job.lease_expires):
                continue  # renewed or moved since it was read
            apply(table, c, job.job_id, job.state, ch.to_state, _now(), reason=ch.reason, exit_code=ch.exit_code,
                  crashes=ch.crashes, charged=ch.charged, requeues=ch.requeues, detail=ch.detail)
            out.append((job.job_id, ch.to_state))
    return out


def reset(table: JobTable, states: Iterable[str], *, job_ids: Iterable[str] | None = None,
          force: bool = False) -> int:
    """Put jobs in ``states`` back to pending with attempts=0; blocked jobs whose dependencies no
    longer fail become pending again. Active states need ``force`` (they may still be running).
    Returns the number of jobs changed (reset + unblocked)."""
    states = list(states)
    check_states(states)
    if not force and any(s in ACTIVE_STATES for s in states):
        raise TableError("reset of queued/running jobs could run them twice; stop them first (or force)")
    now = _now()
    changed = 0
    with table._tx() as c:
        q = f"SELECT job_id, state FROM jobs WHERE state IN ({marks(len(states))})"
        args: list[Any] = list(states)
        if job_ids is not None:
            ids = list(job_ids)
            q += f" AND job_id IN ({marks(len(ids))})"
            args += ids
        for job_id, frm in c.execute(q, args).fetchall():
            if frm in (BLOCKED, PENDING):
                continue  # blocked: unblocked below only if their dependencies allow it
            check_transition(frm, PENDING, "reset", job_id)
            c.execute(
                "UPDATE jobs SET state='pending', reason=NULL, exit_code=NULL, attempts=0, crashes=0, "
                "requeues=0, charged=0, lease_owner=NULL, lease_expires=NULL, finished=NULL, updated=? "
                "WHERE job_id=?",
                (now, job_id),
            )
            event(c, job_id, now, frm, PENDING, "reset")
            changed += 1
        changed += unblock(c, now)
    return changed


# bookkeeping that keeps the state --------------------------------------------
def set_scheduler_id(table: JobTable, job_id: str, scheduler_id: str) -> None:
    """Record the executor's id for a job without changing its state."""
    with table._tx() as c:
        c.execute("UPDATE jobs SET scheduler_id=?, updated=? WHERE job_id=?", (scheduler_id, _now(), job_id))


def set_max_attempts(table: JobTable, max_attempts: int,
                     states: Iterable[str] = (PENDING, QUEUED, RUNNING, BLOCKED)) -> int:
    """Change ``max_attempts`` of the jobs in ``states``; returns how many changed."""
    states = list(states)
    check_states(states)
    with table._tx() as c:
        cur = c.execute(f"UPDATE jobs SET max_attempts=? WHERE state IN ({marks(len(states))})",
                        [int(max_attempts)] + states)
        return cur.rowcount


def set_command(table: JobTable, job_id: str, command: str, *, scheduler_id: str | None = None) -> None:
    """Record the exact command dispatched (shown by ``show``), and the executor's id of the attempt."""
    with table._tx() as c:
        c.execute("UPDATE jobs SET command=?, scheduler_id=COALESCE(?, scheduler_id) WHERE job_id=?",
                  (command, scheduler_id, job_id))
