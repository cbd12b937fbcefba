"""What the job table stores and returns: job specs, records, events, compare-and-set changes,
and the command-template placeholders resolved at dispatch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

# dispatch placeholders are substituted, each path quoted for its place, by the sweep package
from near.sweep.dispatch import resolve_command, run_dir_for
from near.sweep.dispatch import resolve_for_display as _fast_resolve

J = TypeVar("J")  # a job-like record: JobSpec or JobRecord


@dataclass(slots=True)  # 100k of them per big sweep: no per-instance dict
class JobSpec:
    """A job to be added: what expansion produces. ``job_id`` is a content hash (see near.sweep.expand).

    ``command`` is a template: axis values already substituted, dispatch-time placeholders left
    (``${run_dir}``, ``${job_id}``, ``${exp_dir}``, ``${<ref>.run_dir}`` for each ``deps`` ref).
    ``deps`` maps a reference name to the job id it points at. ``uses`` counts the grid points that
    share this job (more than one: a shared job, e.g. an ncsn stage common to several ablations).
    """

    job_id: str
    stage: str
    command: str
    params: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    deps: dict[str, str] = field(default_factory=dict)
    sweep: str = ""
    max_attempts: int = 3
    workdir: str | None = None
    point: str | None = None
    uses: int = 1

    @property
    def label(self) -> str:
        """The grid point in words (``algorithm=NEAR motion=circle seed=0``)."""
        return self.point or _label(self.params)


@dataclass(frozen=True)
class AddResult:
    """Outcome of :meth:`JobTable.add`: jobs inserted, jobs already present, jobs used by >1 grid point."""

    new: int
    existing: int
    shared: int
    new_ids: tuple[str, ...] = ()


@dataclass
class JobRecord:
    """One row of the job table, as read. ``run_dir`` is absolute."""

    job_id: str
    sweep: str
    stage: str
    command_template: str
    params: dict[str, Any]
    resources: dict[str, Any]
    workdir: str | None
    point: str | None
    state: str
    reason: str | None
    exit_code: int | None
    attempts: int
    max_attempts: int
    scheduler_id: str | None
    lease_owner: str | None
    lease_expires: float | None
    created: float
    updated: float
    started: float | None
    finished: float | None
    run_dir: str
    exp_dir: str
    deps: dict[str, str]
    crashes: int = 0          # attempts that ended in a crash (any exit but 0, 2, 3; a lost node)
    requeues: int = 0         # attempts interrupted resumably (exit 3, a scheduler requeue)
    charged: int = 0          # attempts counted against max_attempts (crashes without progress)
    progress: str | None = None  # checkpoint progress seen at the last recorded outcome

    @property
    def label(self) -> str:
        """The grid point in words (``algorithm=NEAR motion=circle seed=0``)."""
        return self.point or _label(self.params)

    @property
    def command(self) -> str:
        """The exact shell command of this job, placeholders resolved against the table location."""
        return resolve_command(self.command_template, self.job_id, self.exp_dir, self.deps)

    def dep_run_dirs(self) -> dict[str, str]:
        """Reference name -> absolute run dir of the job it points at."""
        return {ref: run_dir_for(self.exp_dir, dep) for ref, dep in self.deps.items()}


@dataclass(frozen=True)
class Event:
    """One state change of a job (``history``)."""

    job_id: str
    ts: float
    from_state: str | None
    to_state: str
    reason: str | None
    detail: str | None


@dataclass(frozen=True)
class Change:
    """One compare-and-set of :meth:`JobTable.transition_many` (the arguments of :meth:`JobTable.transition`).

    ``to_state`` None keeps the state and only records the rest (counters, progress, scheduler id,
    the outcome). ``crashes``/``requeues``/``charged`` are added to the job's counters; ``outcome``
    names the node outcome this change folds in: a change whose outcome was folded before does not
    apply, so folding the same outcome file twice changes nothing."""

    job_id: str
    to_state: str | None
    expect: tuple[str, ...] | None = None
    reason: str | None = None
    exit_code: int | None = None
    scheduler_id: str | None = None
    owner: str | None = None
    detail: str | None = None
    charge: int = 0
    crashes: int = 0
    requeues: int = 0
    charged: int = 0
    progress: str | None = None
    outcome: str | None = None


class JobBrief(NamedTuple):
    """A job's id, state, scheduler id and dependencies (:meth:`JobTable.briefs`)."""

    job_id: str
    state: str
    scheduler_id: str | None
    deps: dict[str, str]


def _label(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={'True' if v is True else 'False' if v is False else v}" for k, v in params.items())


_JSON = json.JSONEncoder(ensure_ascii=False)


def _params_encoder():
    """``json.dumps(params, ensure_ascii=False)`` for many small dicts: one C encoder instead of one
    per call (the same output; a failed call leaves the encoder unusable, so it is not reused)."""
    from json.encoder import c_make_encoder, encode_basestring

    if c_make_encoder is None:  # pure-Python json
        return _JSON.encode
    enc = c_make_encoder({}, _JSON.default, encode_basestring, None, ": ", ", ", False, False, True)
    join = "".join
    return lambda params: join(enc(params, 0))


def topo_order(jobs: list[J]) -> list[J]:
    """Jobs (anything with ``job_id`` and ``deps``) ordered so that each comes after those of its
    dependencies that are in the list (stable otherwise)."""
    if not any(j.deps for j in jobs):
        return jobs
    by_id = {j.job_id: j for j in jobs}
    done: set[str] = set()
    out: list[J] = []
    for j in jobs:
        stack = [(j, False)]
        while stack:
            cur, expanded = stack.pop()
            if cur.job_id in done:
                continue
            if expanded:
                done.add(cur.job_id)
                out.append(cur)
                continue
            stack.append((cur, True))
            stack += [(by_id[d], False) for d in cur.deps.values() if d in by_id and d not in done]
    return out
