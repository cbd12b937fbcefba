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
from pathlib import Path

from near.add import DEFAULT_ROOT, add_spec  # add_spec: also the name older callers import from here
from near.errors import TableError
from near.exitcodes import EXIT_STOPPED
from near.sweep.spec import DEFAULT_MAX_JOBS



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
    p.add_argument("--stage-from", default=None, metavar="FIELD",
                   help="each run's stage from this pattern field or --config column (a value naming NCSN "
                        "-> ncsn); a pattern field named 'stage' is used without this")
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


def _open(arg: str, *, readonly: bool = False):
    from near.jobtable import JobTable

    return JobTable.open(exp_dir(arg), readonly=readonly)


# ---------------------------------------------------------------------- add
def cmd_add(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.dry_run:
        return _dry_run(args)

    if not args.no_validate:
        from near.add import load
        from near.sweep.validate import check_experiment_path

        spec = load(args.spec, args.name, args.var, args.max_jobs)
        check_experiment_path(spec, Path(args.root) / spec.name)
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
    from near.add import check_jobs, load
    from near.sweep.shared import merge_shared
    from near.sweep.expand import expand

    spec = load(args.spec, args.name, args.var, args.max_jobs)
    if not args.no_validate:
        from near.sweep.validate import check_experiment_path

        check_experiment_path(spec, Path(args.root) / spec.name)
    if spec.search is not None:  # a search: the jobs of one representative trial per study
        from near.search.controller import axes_points, probe_params

        expansion = expand(spec, [{**p, **probe_params(spec.search)} for p in axes_points(spec)])
    else:
        expansion = expand(spec, max_jobs=args.max_jobs)
    notes, identities = ([], {}) if args.no_validate else check_jobs(spec, expansion.jobs)
    jobs = merge_shared(expansion.jobs, identities)
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
def status_data(table, limit: int | None = None) -> dict:
    """Counts by state, per axis value and stage, and the jobs that need attention (at most
    ``limit`` of them; ``attention`` says how many there are), all counted in SQLite."""
    counts = table.counts()
    jobs, attention = table.attention(limit)
    return {"exp_dir": table.exp_dir, "sweep": table.sweep, "total": sum(counts.values()), "counts": counts,
            "by_axis": table.by_axis(), "jobs": jobs, "attention": attention}


# the jobs `status` lists in text (--json lists all)
STATUS_JOBS = 50


def cmd_status(args: argparse.Namespace) -> int:
    with _open(args.exp, readonly=True) as table:
        data = status_data(table, None if args.json else STATUS_JOBS)
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
        if data["attention"] > len(data["jobs"]):
            print(f"  ... and {data['attention'] - len(data['jobs'])} more (--json lists them all)")
    if (Path(data["exp_dir"]) / "search").is_dir():  # only a search sweep pays for importing the search package
        from near.search.report import status_lines

        for line in status_lines(Path(data["exp_dir"])):
            print(line)
    return 0


# ---------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    from near.executors.controller import Controller
    from near.executors.local import LocalBackend
    from near.search.controller import hook_for

    if args.workers < 1:
        raise TableError("--workers must be at least 1")
    with _open(args.exp) as table:
        if args.max_attempts is not None:
            table.set_max_attempts(args.max_attempts)
        search = hook_for(table)
        ctl = Controller(table, LocalBackend(table, workers=args.workers, lease_s=args.lease, grace_s=args.grace,
                                             max_jobs=args.max_jobs, log=_say),
                         [search] if search else [], progress_s=args.progress, log=_say)
        result = ctl.run()
    if result.interrupted:
        print("near: stopped; run the same command again to continue", file=sys.stderr)
        return EXIT_STOPPED
    return 0 if result.ok or args.max_jobs is not None else 1


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


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

    with _open(args.exp, readonly=True) as table:
        job = table.find(args.job)
        history = table.history(job.job_id)
        deps = {ref: table.get(d) for ref, d in job.deps.items()}
        dependents = table.dependents(job.job_id)
        meta = table.meta()
    print(f"job        {job.job_id}  ({job.sweep}, stage {job.stage})")
    print(f"point      {' '.join(f'{k}={v}' for k, v in job.params.items()) or '-'}")
    print(f"state      {job.state}" + (f": {job.reason}" if job.reason else "")
          + (f" (exit code {job.exit_code})" if job.exit_code is not None else ""))
    from near.executors.base import max_requeues, uncharged_attempts

    print(f"attempts   {job.attempts} (crashes {job.crashes}, {job.charged} of max_attempts {job.max_attempts} "
          f"charged; requeues {job.requeues}, {uncharged_attempts(job)} of max_requeues {max_requeues(job)} "
          "uncharged)" + (f"; checkpoint {job.progress}" if job.progress else ""))
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

    s = import_runs(args.runs, args.exp, args.pattern, args.config, stage=args.stage, stage_from=args.stage_from)
    for w in s.warnings:
        print(f"near sweep import: warning: {w}", file=sys.stderr)
    print(f"{args.runs} -> {s.target}/jobs.db: {s.runs} run(s): {s.new} new, {s.existing} already imported")
    return 0


# ---------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    with _open(args.exp, readonly=True) as table:
        out = Path(args.out) if args.out else Path(table.exp_dir) / f"jobs.{args.format}"
        try:
            table.export(out, args.format)
        except OSError as err:
            raise TableError(f"{out}: cannot write the export ({err.strerror or err}); "
                             "choose another file with --out") from err
        n = len(table)
    print(f"wrote {n} jobs to {out}")
    return 0
