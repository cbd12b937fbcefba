"""`near sweep add|status|run|reset|show|export`: from a spec to a job table to local runs.

``EXP`` is a sweep folder (``experiments/<name>``) holding the table ``jobs.db`` and ``runs/``; a bare
name is looked up under ``experiments/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from near.errors import TableError
from near.sweep.spec import DEFAULT_MAX_JOBS

DEFAULT_ROOT = "experiments"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's commands to `subparsers`."""
    p = subparsers.add_parser("add", help="expand a sweep spec into its job table (adds only new jobs)")
    p.add_argument("spec", help="sweep spec YAML, e.g. sweeps/demo.yaml")
    p.add_argument("--root", default=DEFAULT_ROOT, help="output root; the sweep goes to ROOT/<name> (default: experiments)")
    p.add_argument("--dry-run", action="store_true", help="expand and validate, print the jobs, write nothing")
    p.add_argument("--no-validate", action="store_true", help="skip composing trainer jobs with hydra")
    p.add_argument("--name", help="sweep name (default: the spec's name); the sweep goes to ROOT/NAME")
    p.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                   help="force a template variable of the spec (repeatable), e.g. --var rl_iters=3")
    p.add_argument("--max-jobs", type=int, default=DEFAULT_MAX_JOBS, metavar="N",
                   help=f"refuse a spec that can expand to more than N jobs (default {DEFAULT_MAX_JOBS:,})")
    p.set_defaults(func=cmd_add)

    p = subparsers.add_parser("status", help="counts by state and per axis, failures, scheduler ids")
    p.add_argument("exp", help="sweep folder, e.g. experiments/demo")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("run", help="run pending jobs on this machine (resumable; Ctrl-C stops cleanly)")
    p.add_argument("exp", help="sweep folder, e.g. experiments/demo")
    p.add_argument("--workers", "-j", type=int, default=1, help="jobs run in parallel (default 1)")
    p.add_argument("--max-attempts", type=int, default=None, help="set max attempts of unfinished jobs first")
    p.add_argument("--lease", type=float, default=60.0, help="lease seconds: a dead controller's jobs are "
                   "requeued this long after its last heartbeat (default 60)")
    p.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL on stop")
    p.add_argument("--progress", type=float, default=10.0, help="seconds between counts lines")
    p.add_argument("--max-jobs", type=int, default=None, help="start at most this many jobs, then finish")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("reset", help="put jobs back to pending (default: failed); unblocks dependents")
    p.add_argument("exp")
    p.add_argument("--state", action="append", default=None,
                   help="state to reset (repeatable; default failed): failed, cancelled, blocked, done")
    p.add_argument("--job", action="append", default=None, help="only these job ids (unique prefixes)")
    p.set_defaults(func=cmd_reset)

    p = subparsers.add_parser("show", help="one job: exact command, state history, run dir")
    p.add_argument("exp")
    p.add_argument("job", help="job id or a unique prefix")
    p.set_defaults(func=cmd_show)

    p = subparsers.add_parser("import", help="record runs near did not launch as done jobs (for `near report`)")
    p.add_argument("runs", help="folder of run dirs, e.g. NEAR's runs/ (HumanoidNEAR_walk_42/summaries/...)")
    p.add_argument("exp", help="sweep folder to add them to (created when absent), e.g. experiments/near_paper")
    p.add_argument("--pattern", default=None, help="run dir names -> columns, e.g. '{algorithm}_{motion}_{seed:d}'")
    p.add_argument("--config", action="append", default=None, metavar="[COLUMN=]KEY",
                   help="a key of each run's config.yaml as a column (repeatable)")
    p.add_argument("--stage", default="rl", help="stage of the imported jobs (default: rl)")
    p.set_defaults(func=cmd_import)

    p = subparsers.add_parser("export", help="write the job table as CSV or parquet")
    p.add_argument("exp")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("--out", default=None, help="output file (default: EXP/jobs.<format>)")
    p.set_defaults(func=cmd_export)


def exp_dir(arg: str) -> Path:
    """The sweep folder named by ``arg`` (a path, or a bare name under experiments/)."""
    p = Path(arg)
    if not p.is_dir() and os.sep not in arg and (Path(DEFAULT_ROOT) / arg).is_dir():
        p = Path(DEFAULT_ROOT) / arg
    if not (p / "jobs.db").is_file():
        raise TableError(f"{p}: no job table here (expected {p / 'jobs.db'}; run `near sweep add SPEC` first)")
    return p


def _open(arg: str):
    from near.jobtable import JobTable

    return JobTable.open(exp_dir(arg))


# ---------------------------------------------------------------------- add
@dataclass
class AddSummary:
    """What ``add_spec`` did."""

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


def _load(spec_path: str | os.PathLike, name: str | None = None, set_vars: list[str] | None = None,
          max_jobs: int = DEFAULT_MAX_JOBS):
    """The spec with the command line's --name and --var applied."""
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


def add_spec(spec_path: str | os.PathLike, root: str | os.PathLike = DEFAULT_ROOT, *,
             validate: bool = True, name: str | None = None, set_vars: list[str] | None = None,
             max_jobs: int = DEFAULT_MAX_JOBS) -> AddSummary:
    """Expand, validate (before writing anything) and add a spec to ``ROOT/<name>/jobs.db``;
    ``max_jobs``: refuse a spec that can expand to more jobs.

    An unchanged spec (same bytes, workdir, cfg/ tree; see ``spec_fingerprint``) that was added
    before is recognised without expanding it again."""
    from near.sweep.expand import expand
    from near.jobtable import JobTable
    from near.sweep.spec import spec_fingerprint
    from near.sweep.shared import merge_shared
    from near.sweep.validate import validate_jobs
    from near import snapshot

    spec = _load(spec_path, name, set_vars, max_jobs)
    if spec.search is not None:
        return _add_search(spec, root, validate, name, set_vars)
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
    jobs = expansion.jobs
    notes: list[str] = []
    identities: dict[str, tuple] = {}
    if validate:
        skip = [(j.job_id, "stage has validate: false") for j in expansion.jobs
                if any(s.name == j.stage and not s.validate for s in spec.stages)]
        report = validate_jobs(expansion.jobs, spec.label, skip_stages=skip)
        notes = report.notes()
        identities = report.identities
        if report.checked:
            notes.insert(0, f"validated {report.checked} trainer job(s) against cfg/ ({report.shapes} distinct "
                         "override shape(s))")
    # everything is validated: only now touch the disk
    table = JobTable.open_or_create(target, sweep=spec.name)
    try:
        if identities:  # jobs whose stage reads the same settings are one (ids already in the table stay)
            jobs = merge_shared(jobs, identities, [b.job_id for b in table.briefs()])
        result = table.add(jobs, axes=expansion.axes)
        meta = table.meta()
        specs = json.loads(meta.get("specs", "[]"))
        if str(spec.path) not in specs:
            table.set_meta("specs", json.dumps(specs + [str(spec.path)]))
        table.set_meta(snapshot.META_KEY, "true" if spec.snapshot else "false")
        table.set_meta(key, json.dumps({"digest": digest, "points": len(expansion.points),
                                        "jobs": len(jobs), "shared": result.shared}))
        total = len(table)
    finally:
        table.close()
    return AddSummary(spec.label, target, len(expansion.points), len(jobs), result.new,
                      result.existing, result.shared, total, notes)


def _add_search(spec, root, validate: bool, name: str | None, set_vars: list[str] | None) -> AddSummary:
    from near.search.controller import add_search

    pairs = dict(item.partition("=")[::2] for item in set_vars or [])
    target, in_flight, notes = add_search(spec, root, validate=validate, name=name, set_vars=pairs)
    from near.jobtable import JobTable

    with JobTable.open(target) as table:
        total = len(table)
    return AddSummary(spec.label, target, 0, in_flight, in_flight, 0, 0, total, notes, search=True)


def cmd_add(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.dry_run:
        return _dry_run(args)
    s = add_spec(args.spec, args.root, validate=not args.no_validate, name=args.name, set_vars=args.var,
                 max_jobs=args.max_jobs)
    if s.search:
        print(f"{s.spec_label} -> {s.target}/jobs.db: {s.new} trial(s) in flight, {s.total} job(s) in table "
              f"({time.perf_counter() - t0:.2f}s)")
    else:
        print(f"{s.spec_label} -> {s.target}/jobs.db: {s.points} grid points, {s.jobs} jobs: "
              f"{s.new} new, {s.existing} existing, {s.shared} shared "
              f"({s.total} in table; {time.perf_counter() - t0:.2f}s)")
    for n in s.notes:
        print(f"note: {n}")
    return 0


def _dry_run(args: argparse.Namespace) -> int:
    from near.sweep.expand import expand
    from near.sweep.shared import merge_shared
    from near.sweep.validate import validate_jobs

    spec = _load(args.spec, args.name, args.var, args.max_jobs)
    if spec.search is not None:  # a search: the jobs of one representative trial per study
        from near.search.controller import axes_points, probe_params

        expansion = expand(spec, [{**p, **probe_params(spec.search)} for p in axes_points(spec)])
    else:
        expansion = expand(spec, max_jobs=args.max_jobs)
    notes: list[str] = []
    jobs = expansion.jobs
    if not args.no_validate:
        skip = [(j.job_id, "stage has validate: false") for j in expansion.jobs
                if any(s.name == j.stage and not s.validate for s in spec.stages)]
        report = validate_jobs(expansion.jobs, spec.label, skip_stages=skip)
        notes = report.notes()
        jobs = merge_shared(jobs, report.identities)
    for j in jobs:
        deps = " ".join(f"{r}={d}" for r, d in j.deps.items())
        print(f"{j.job_id} {j.stage:<5} {j.label}" + (f"  needs {deps}" if deps else ""))
        print(f"    {j.command}")
    print(f"{spec.label}: {len(expansion.points)} grid points, {len(jobs)} jobs "
          f"({sum(1 for j in jobs if j.uses > 1)} shared); dry run, nothing written to {Path(args.root) / spec.name}")
    for n in notes:
        print(f"note: {n}")
    return 0


# ---------------------------------------------------------------------- status
def status_data(table) -> dict:
    """Counts by state, per axis value and stage, and the jobs that need attention."""
    from near.jobtable import STATES

    jobs = table.jobs()
    axes = table.axes()
    by_axis: dict[str, dict[str, dict[str, int]]] = {}
    for a in ["stage"] + axes:
        by_axis[a] = {}
    for j in jobs:
        for a in ["stage"] + axes:
            v = j.stage if a == "stage" else j.params.get(a)
            if v is None:
                continue
            row = by_axis[a].setdefault(str(v), {})
            row[j.state] = row.get(j.state, 0) + 1
    attention = [
        {"job_id": j.job_id, "stage": j.stage, "state": j.state, "reason": j.reason, "exit_code": j.exit_code,
         "attempts": j.attempts, "max_attempts": j.max_attempts, "scheduler_id": j.scheduler_id,
         "params": j.params, "run_dir": j.run_dir}
        for j in jobs if j.state not in ("pending", "done") or j.reason
    ]
    counts = {s: 0 for s in STATES}
    for j in jobs:
        counts[j.state] += 1
    return {"exp_dir": table.exp_dir, "sweep": table.sweep, "total": len(jobs), "counts": counts,
            "by_axis": by_axis, "jobs": attention}


def cmd_status(args: argparse.Namespace) -> int:
    with _open(args.exp) as table:
        data = status_data(table)
    if args.json:
        json.dump(data, sys.stdout, indent=1, default=str)
        print()
        return 0
    from near.jobtable import STATES

    counts = data["counts"]
    print(f"{data['sweep'] or data['exp_dir']}: {data['total']} jobs  "
          + "  ".join(f"{s} {counts[s]}" for s in STATES if counts[s]))
    states = [s for s in STATES if counts[s]]
    for axis, values in data["by_axis"].items():
        if not values:
            continue
        print(f"\n{axis}:")
        width = max(len(v) for v in values)
        print(f"  {'':<{width}}  " + "  ".join(f"{s:>9}" for s in states))
        for v, row in values.items():
            print(f"  {v:<{width}}  " + "  ".join(f"{row.get(s, 0):>9}" for s in states))
    if data["jobs"]:
        print("\njobs:")
        for j in data["jobs"]:
            point = " ".join(f"{k}={v}" for k, v in j["params"].items())
            sid = f" [{j['scheduler_id']}]" if j["scheduler_id"] else ""
            why = f": {j['reason']}" if j["reason"] else ""
            print(f"  {j['job_id']} {j['stage']:<5} {j['state']:<9}{sid} {point} "
                  f"(attempts {j['attempts']}/{j['max_attempts']}){why}")
    from near.search.report import status_lines

    for line in status_lines(Path(data["exp_dir"])):
        print(line)
    return 0


# ---------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    from near.executors.local import LocalExecutor

    if args.workers < 1:
        raise TableError("--workers must be at least 1")
    with _open(args.exp) as table:
        if args.max_attempts is not None:
            table.set_max_attempts(args.max_attempts)
        from near.search.controller import hook_for

        search = hook_for(table)
        ex = LocalExecutor(table, workers=args.workers, lease_s=args.lease, grace_s=args.grace,
                           progress_s=args.progress, max_jobs=args.max_jobs, hooks=[search] if search else [])
        if search is not None:
            search.stop = ex.prune
        result = ex.run()
    if result.interrupted:
        print("near: stopped; run the same command again to continue", file=sys.stderr)
        return 130
    return 0 if result.ok or args.max_jobs is not None else 1


# ---------------------------------------------------------------------- reset
def cmd_reset(args: argparse.Namespace) -> int:
    states = args.state or ["failed"]
    with _open(args.exp) as table:
        ids = None
        if args.job:
            ids = [table.find(p).job_id for p in args.job]
        before = table.counts()
        n = table.reset(states, job_ids=ids)
        after = table.counts()
    print(f"reset {n} job(s) to pending ({', '.join(states)}"
          + (f"; {before['blocked'] - after['blocked']} unblocked" if before["blocked"] != after["blocked"] else "")
          + ")")
    return 0


# ---------------------------------------------------------------------- show
def _ts(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def cmd_show(args: argparse.Namespace) -> int:
    from near.snapshot import describe, enabled, recorded

    with _open(args.exp) as table:
        job = table.find(args.job)
        history = table.history(job.job_id)
        deps = {ref: table.get(d) for ref, d in job.deps.items()}
        dependents = table.dependents(job.job_id)
        meta = table.meta()
    print(f"job        {job.job_id}  ({job.sweep}, stage {job.stage})")
    print(f"point      {' '.join(f'{k}={v}' for k, v in job.params.items()) or '-'}")
    print(f"state      {job.state}" + (f": {job.reason}" if job.reason else "")
          + (f" (exit code {job.exit_code})" if job.exit_code is not None else ""))
    print(f"attempts   {job.attempts} (crashes {job.crashes}, {job.charged} of max_attempts {job.max_attempts} "
          f"charged; requeues {job.requeues})" + (f"; checkpoint {job.progress}" if job.progress else ""))
    if job.scheduler_id:
        print(f"scheduler  {job.scheduler_id}")
    print(f"resources  {json.dumps(job.resources, sort_keys=True)}")
    print(f"run dir    {job.run_dir}")
    print(f"workdir    {job.workdir}")
    snap = recorded(job.run_dir)
    if snap is not None:
        info = describe(snap)
        print(f"snapshot   {info.label() if info else snap}")
    elif not enabled(meta):
        print("snapshot   none (the spec says snapshot: false): runs the live workdir")
    for ref, d in deps.items():
        print(f"needs      {ref} = {d.job_id} ({d.stage}, {d.state}) {d.run_dir}")
    if dependents:
        print(f"needed by  {', '.join(dependents)}")
    print(f"\ncommand (run it from the {'snapshot' if snap is not None else 'workdir'}; or: bash <run dir>/command.sh):")
    print(f"  {job.command}")
    print("\nhistory:")
    for e in history:
        arrow = f"{e.from_state} -> {e.to_state}" if e.from_state else e.to_state
        extra = "".join(f"; {x}" for x in (e.reason, e.detail) if x)
        print(f"  {_ts(e.ts)}  {arrow}{extra}")
    return 0


# ---------------------------------------------------------------------- import
def cmd_import(args: argparse.Namespace) -> int:
    from near.sweep.importing import import_runs

    s = import_runs(args.runs, args.exp, args.pattern, args.config, stage=args.stage)
    for w in s.warnings:
        print(f"near sweep import: warning: {w}", file=sys.stderr)
    print(f"{args.runs} -> {s.target}/jobs.db: {s.runs} run(s): {s.new} new, {s.existing} already imported")
    return 0


# ---------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    with _open(args.exp) as table:
        out = Path(args.out) if args.out else Path(table.exp_dir) / f"jobs.{args.format}"
        table.export(out, args.format)
        n = len(table)
    print(f"wrote {n} jobs to {out}")
    return 0
