"""Adding jobs to the job table: new jobs enter pending, or blocked behind a dependency that
cannot finish, in one transaction (all or nothing). Bound as :meth:`JobTable.add`."""

from __future__ import annotations

import gc
import json
from typing import TYPE_CHECKING, Iterable, Sequence

from near.errors import TableError
from near.jobtable.connection import now as _now
from near.jobtable.counters import add_tallies, tally_new
from near.jobtable.queries import states_of
from near.jobtable.records import AddResult, JobSpec, _params_encoder, topo_order
from near.jobtable.states import BLOCKED, BLOCKING_STATES, PENDING, check_transition

if TYPE_CHECKING:
    from near.jobtable.table import JobTable


def add(table: JobTable, jobs: Iterable[JobSpec], *, axes: Sequence[str] | None = None) -> AddResult:
    """Insert jobs not yet present (by id). Dependencies must be in the batch or the table.

    A new job whose dependency is failed/cancelled/blocked starts blocked. All or nothing:
    on error the table is unchanged.
    """
    # Building 100k rows allocates hundreds of thousands of tuples and strings and frees none:
    # the cyclic GC would rescan the whole (expansion-sized) heap for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _add(table, jobs, axes)
    finally:
        if enabled:
            gc.enable()

def _add(table: JobTable, jobs: Iterable[JobSpec], axes: Sequence[str] | None) -> AddResult:
    jobs = jobs if isinstance(jobs, list) else list(jobs)
    merged: dict[str, JobSpec] = {j.job_id: j for j in jobs}
    if len(merged) != len(jobs):  # the same id twice: keep the first, count its uses
        merged = {}
        for job in jobs:
            prev = merged.get(job.job_id)
            if prev is None:
                merged[job.job_id] = job
            else:
                prev.uses += job.uses
    shared = sum(1 for j in merged.values() if j.uses > 1)
    axis_names = list(axes) if axes is not None else []
    if axes is None:
        seen: set[str] = set()
        for j in merged.values():
            for k in j.params:
                if k not in seen:
                    seen.add(k)
                    axis_names.append(k)
    check_transition(None, PENDING)
    check_transition(None, BLOCKED)
    now = _now()
    with table._tx() as c:
        existing_ids = {r[0] for r in c.execute("SELECT job_id FROM jobs")}
        if existing_ids:
            new = [j for jid, j in merged.items() if jid not in existing_ids]
        else:
            new = list(merged.values())
        new_set = merged.keys() if len(new) == len(merged) else {j.job_id for j in new}
        # one pass: every dependency is known, and (usually) each comes before its dependents
        dep_states: dict[str, str] = {}
        deps_first = True
        placed: set[str] = set()
        for j in new:
            if j.deps:
                for ref, dep in j.deps.items():
                    if dep in placed:
                        continue
                    if dep in new_set:
                        deps_first = False
                    elif dep in existing_ids:
                        dep_states[dep] = ""
                    else:
                        raise TableError(
                            f"{table.path}: job {j.job_id} ({j.stage}) needs {ref}={dep}, which is neither "
                            "in the table nor being added"
                        )
            placed.add(j.job_id)
        del placed
        if dep_states:
            for jid, st in states_of(c, list(dep_states)).items():
                dep_states[jid] = st
        # Initial state: blocked if any dependency (existing, or new and itself blocked) cannot finish.
        order = new if deps_first else topo_order(new)
        blocked: dict[str, str] = {}  # job id -> reason; every other new job starts pending
        if any(st in BLOCKING_STATES for st in dep_states.values()):
            for j in order:
                for ref, dep in j.deps.items():
                    st = dep_states.get(dep) if dep in dep_states else (BLOCKED if dep in blocked else PENDING)
                    if st in BLOCKING_STATES:
                        blocked[j.job_id] = f"dependency {ref}={dep} is {st}"
                        break
        res_json = {id(j.resources): j.resources for j in order}  # one dict per stage definition
        for k, r in res_json.items():
            res_json[k] = json.dumps(r, sort_keys=True)
        enc = _params_encoder()
        # rows get seq = the largest so far + 1, in insertion order
        first_seq = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
        c.executemany(
            "INSERT INTO jobs(job_id, sweep, stage, command_template, params, resources, workdir, point, "
            "max_attempts, created, updated, state, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(j.job_id, j.sweep, j.stage, j.command, enc(j.params), res_json[id(j.resources)], j.workdir,
              j.point, j.max_attempts, now, now, BLOCKED if j.job_id in blocked else PENDING,
              blocked.get(j.job_id))
             for j in order],
        )
        c.executemany(
            "INSERT INTO deps(job_id, ref, dep_job_id) VALUES (?,?,?)",
            [(j.job_id, ref, dep) for j in order if j.deps for ref, dep in j.deps.items()],
        )
        add_tallies(c, *tally_new(order, blocked, first_seq))
        if blocked:
            c.executemany(
                "INSERT INTO events(job_id, ts, from_state, to_state, reason, detail) VALUES (?,?,?,?,?,?)",
                [(jid, now, None, BLOCKED, r, None) for jid, r in blocked.items()],
            )
        old_axes = json.loads(
            (c.execute("SELECT value FROM meta WHERE key='axes'").fetchone() or ["[]"])[0]
        )
        all_axes = old_axes + [a for a in axis_names if a not in old_axes]
        if all_axes != old_axes:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('axes', ?)", (json.dumps(all_axes),))
        if not (c.execute("SELECT value FROM meta WHERE key='sweep'").fetchone() or [""])[0]:
            sweep_name = next((j.sweep for j in new if j.sweep), "")
            if sweep_name:
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('sweep', ?)", (sweep_name,))
    return AddResult(
        new=len(new), existing=len(merged) - len(new), shared=shared,
        new_ids=tuple(j.job_id for j in order),
    )
