"""The job table: the ONE place where a job's state changes.

A package, one module per concern: ``states`` (the states and the legal-transition table),
``records`` (what is stored and returned), ``schema`` (SQLite schema and migrations),
``connection`` (connections, read-only ones included, and write transactions), ``adding`` and
``transitions`` (every write), ``counters`` (attempt counters, counts by state), ``queries``
(reads), ``frames`` (pandas views), and ``table`` (the :class:`JobTable` handle binding them).

An SQLite file (``experiments/<sweep>/jobs.db``) in WAL mode. Every state change is a
compare-and-set inside ``BEGIN IMMEDIATE`` so that any number of processes (local workers,
SLURM submitters, reconcilers) can share one table without ever dispatching a job twice.

Public API (stable; other stages build on it):

- ``JobTable.create(path)`` / ``JobTable.open(path, readonly=False)`` / ``JobTable.open_or_create(path)``;
  a read-only handle (asked for by commands that only read, or taken when the file or its folder
  is not writable) never migrates or writes
- ``add(jobs) -> AddResult(new, existing, shared)``: insert :class:`JobSpec` s, deduplicated by id
- ``claim(owner, limit, lease_s, *, to_state="running", stages=None, job_ids=None) -> list[JobRecord]``
  atomically takes pending jobs whose dependencies are all done
- ``heartbeat(owner, job_ids, lease_s) -> set[str]``: extend leases; returns the ids still owned
- ``transition(job_id, to_state, *, reason, exit_code, scheduler_id, expect, owner, detail) -> bool``
  (compare-and-set), ``transition_many(changes)`` (many, few transactions) and the conveniences
  ``mark_queued/mark_running/mark_done/mark_failed/
  mark_cancelled/release``
- ``requeue_stale(now=None)``: expired leases -> pending (or failed after ``max_attempts``)
- ``reset(states)``, ``cancel(job_ids)``; failed/cancelled/blocked jobs block their pending
  dependents (transitively), ``reset`` unblocks them
- ``prune(job_ids, reason)``: active jobs -> pruned (a search stopped them early)
- ``folded(job_ids)``: names of the node outcomes already recorded; ``set_scheduler_id``, ``set_command``,
  ``set_max_attempts``
- ``counts()`` (per state), ``by_axis()`` (per stage / axis value and state, from the tallies kept
  in SQLite: a few thousand rows read, whatever the table's size), ``attention(limit)``
- ``get(job_id)``, ``find(prefix)``, ``jobs(states=None, stages=None)``, ``briefs()``,
  ``leased()``, ``history(job_id)``, ``histories(job_ids)``,
  ``deps(job_id)``, ``dependents(job_id)``, ``axes()``
- ``to_frame()`` (pandas; one column per axis), ``export(path, fmt)`` (csv | parquet)

Legal transitions are one declarative table, :data:`near.jobtable.states.TRANSITIONS`; every
write (add, claim, transition, reset, block, unblock) checks it. A read that meets a malformed
file, or a job in a state near does not know, raises TableError naming the file (and the job).

Attempt accounting (``attempts``, ``crashes``, ``requeues``, ``charged``) is described in
:mod:`near.jobtable.counters`; the retry policy is ``near.executors.base.record_outcome``.

Command templates keep ``${run_dir}``, ``${job_id}``, ``${exp_dir}`` and ``${<ref>.run_dir}``
placeholders; :meth:`JobRecord.command` resolves them against the table's current location, so an
experiment folder can be moved. ``$${`` is a literal ``${`` (e.g. a hydra interpolation).
"""


from near.jobtable.records import (
    AddResult, Change, Event, JobBrief, JobRecord, JobSpec, resolve_command, run_dir_for, topo_order,
)
from near.jobtable.schema import MAGIC, SCHEMA_VERSION, TABLE_FILENAME
from near.jobtable.states import (
    ACTIVE_STATES, BLOCKED, BLOCKING_STATES, CANCELLED, DONE, FAILED, FINAL_STATES, PENDING, PRUNED, QUEUED,
    RUNNING, STATES, TRANSITIONS, check_transition, legal,
)
from near.jobtable.table import JobTable

__all__ = [
    "ACTIVE_STATES", "AddResult", "BLOCKED", "BLOCKING_STATES", "CANCELLED", "Change", "DONE", "Event", "FAILED",
    "FINAL_STATES", "JobBrief", "JobRecord", "JobSpec", "JobTable", "MAGIC", "PENDING", "PRUNED", "QUEUED",
    "RUNNING", "SCHEMA_VERSION", "STATES", "TABLE_FILENAME", "TRANSITIONS", "check_transition", "legal",
    "resolve_command", "run_dir_for", "topo_order",
]
