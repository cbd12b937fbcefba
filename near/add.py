"""Adding a sweep spec to its job table: the one service for grid and search sweeps.

``near sweep add``, the search controller (each trial's jobs) and the tests all add jobs through
here: :func:`add_spec` for a whole spec (a grid's points, or a search's studies and first
trials), :func:`add_jobs` for jobs expanded from a spec (a grid, or one trial). Everything is
validated before anything is written; the table remembers which specs it holds and whether its
jobs run a code snapshot.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from near.jobtable import AddResult, JobSpec, JobTable
from near.sweep.spec import DEFAULT_MAX_JOBS

DEFAULT_ROOT = "experiments"


@dataclass
class AddSummary:
    """What :func:`add_spec` did."""

    spec_label: str
    target: Path
    points: int
    jobs: int
    new: int
    existing: int
    shared: int
    total: int
    notes: list[str]
    unchanged: bool = False
    search: bool = False  # a search spec: ``jobs`` are the trials' jobs added so far


def load(spec_path: str | os.PathLike, name: str | None = None, set_vars: list[str] | None = None,
         max_jobs: int = DEFAULT_MAX_JOBS):
    """The spec with the command line's ``--name`` and ``--var KEY=VALUE`` applied."""
    from near.errors import SpecError
    from near.sweep.spec import load_spec, with_settings

    pairs = {}
    for item in set_vars or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--var {item!r}: expected KEY=VALUE")
        pairs[key] = value
    if max_jobs < 1:
        raise SpecError(f"--max-jobs {max_jobs}: must be a positive number of jobs")
    return with_settings(load_spec(spec_path, max_jobs=max_jobs), name=name, set_vars=pairs)


def check_jobs(spec, jobs: list[JobSpec]) -> tuple[list[str], dict[str, tuple]]:
    """Check every trainer job's typed settings (stages with ``validate: false`` skipped); raises
    on the first bad one, else returns the notes to print and each job's stage identity (what its
    stage reads), for :func:`near.sweep.shared.merge_shared`."""
    from near.sweep.validate import validate_jobs

    skip = [(j.job_id, "stage has validate: false") for j in jobs
            if any(s.name == j.stage and not s.validate for s in spec.stages)]
    report = validate_jobs(jobs, spec.label, skip_stages=skip)
    notes = report.notes()
    if report.checked:
        notes.insert(0, f"validated {report.checked} trainer job(s) against cfg/ ({report.shapes} distinct "
                     "override shape(s))")
    return notes, report.identities


def add_jobs(table: JobTable, spec, jobs: Iterable[JobSpec]) -> AddResult:
    """Add jobs expanded from ``spec`` (grid points, or a search trial's) to ``table``, and record
    the spec and its snapshot setting; adding a job that is there already changes nothing."""
    from near import snapshot

    result = table.add(jobs, axes=[a.name for a in spec.axes])
    meta = table.meta()
    specs = json.loads(meta.get("specs", "[]"))
    if str(spec.path) not in specs:
        table.set_meta("specs", json.dumps(specs + [str(spec.path)]))
    flag = "true" if spec.snapshot else "false"
    if meta.get(snapshot.META_KEY) != flag:
        table.set_meta(snapshot.META_KEY, flag)
    return result


def add_spec(spec_path: str | os.PathLike, root: str | os.PathLike = DEFAULT_ROOT, *,
             validate: bool = True, name: str | None = None, set_vars: list[str] | None = None,
             max_jobs: int = DEFAULT_MAX_JOBS) -> AddSummary:
    """Expand, validate (before writing anything) and add a spec to ``ROOT/<name>/jobs.db``;
    ``max_jobs``: refuse a spec that can expand to more jobs. A search spec creates its studies
    and adds their first trials.

    An unchanged grid spec (same bytes, workdir, cfg/ tree; see ``spec_fingerprint``) that was
    added before is recognised without expanding it again."""
    spec = load(spec_path, name, set_vars, max_jobs)
    if spec.search is not None:
        return _add_search(spec, root, validate, name, set_vars)
    from near.sweep.expand import expand
    from near.sweep.shared import merge_shared
    from near.sweep.spec import spec_fingerprint

    target = Path(root) / spec.name
    digest = spec_fingerprint(spec, validate=validate)
    key = f"added:{spec.path}"
    if (target / "jobs.db").exists():
        with JobTable.open(target) as table:
            prev = json.loads(table.meta().get(key, "{}"))
            total = len(table)
            if prev.get("digest") == digest and total >= prev.get("jobs", 0):
                return AddSummary(spec.label, target, prev["points"], prev["jobs"], 0, prev["jobs"],
                                  prev["shared"], total, ["spec, workdir and cfg/ unchanged since the last add"],
                                  unchanged=True)
    expansion = expand(spec, max_jobs=max_jobs)
    notes, identities = check_jobs(spec, expansion.jobs) if validate else ([], {})
    # everything is validated: only now touch the disk
    with JobTable.open_or_create(target, sweep=spec.name) as table:
        # jobs whose stage reads the same settings are one job; ids already in the table stay
        jobs = merge_shared(expansion.jobs, identities, [b.job_id for b in table.briefs()])
        result = add_jobs(table, spec, jobs)
        table.set_meta(key, json.dumps({"digest": digest, "points": len(expansion.points),
                                        "jobs": len(jobs), "shared": result.shared}))
        total = len(table)
    return AddSummary(spec.label, target, len(expansion.points), len(jobs), result.new,
                      result.existing, result.shared, total, notes)


def _add_search(spec, root: str | os.PathLike, validate: bool, name: str | None,
                set_vars: list[str] | None) -> AddSummary:
    """Validate a probe trial's jobs (before writing anything), create the table and the studies,
    and add the first ``parallel`` trials of every study."""
    from near.search import study as studymod
    from near.search.controller import SearchHook, axes_points, probe_params, save_settings, trial_jobs

    points = axes_points(spec)
    notes = check_jobs(spec, trial_jobs(spec, points[0], probe_params(spec.search))[1])[0] if validate else []
    target = Path(root) / spec.name
    pairs = dict(item.partition("=")[::2] for item in set_vars or [])
    with JobTable.open_or_create(target, sweep=spec.name) as table:
        save_settings(table, str(spec.path), name, pairs)
        hook = SearchHook(target, spec, log=lambda m: None)
        hook(table)
        in_flight = len(hook.tracked)
        total = len(table)
    cfg = spec.search
    notes.insert(0, f"search: {len(points)} stud{'y' if len(points) == 1 else 'ies'} x {cfg.budget} trials "
                 f"({cfg.sampler}, {cfg.parallel} in flight, {cfg.mode} {cfg.metric} at {cfg.at}); "
                 f"journal {studymod.journal_path(target)}")
    return AddSummary(spec.label, target, 0, in_flight, in_flight, 0, 0, total, notes, search=True)
