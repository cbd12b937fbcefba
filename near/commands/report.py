"""`near report EXP [--spec plotting/NAME.yaml] [--out DIR] [--check]` and `near report --all`: regenerate figures and tables from logs."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` command."""
    p = subparsers.add_parser(
        "report",
        help="figures and tables from a sweep's tensorboard logs",
        description="Read every run's event files (cached in EXP/.cache/scalars), join the job table's "
        "metadata, and write the figures and tables of a plotting spec. Default spec: the one in plotting/ "
        "whose `sweep:` is EXP's folder name, else one derived from the data.",
    )
    p.add_argument("exp", nargs="?", help="experiment folder, e.g. experiments/demo (holds jobs.db and runs/), or "
                   "any folder of runs (see --pattern); default: the spec's runs.root")
    p.add_argument("--all", action="store_true",
                   help="every sweep under --root with every plotting/ spec whose `sweep:` matches it "
                        "(several specs for one sweep: EXP/figures/<spec name>/); `make figures`")
    p.add_argument("--root", default="experiments", help="with --all: where the sweeps are (default: %(default)s)")
    p.add_argument("--spec", default=None, help="plotting spec YAML (default: matched by sweep name)")
    p.add_argument("--out", default=None, help="output folder (default: EXP/figures)")
    p.add_argument("--workers", type=int, default=None, help="processes that decode event files (default: CPUs)")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write EXP/.cache (re-read everything)")
    p.add_argument("--force", action="store_true", help="redraw even when nothing changed since the last report")
    p.add_argument("--pattern", default=None,
                   help="metadata from the paths of runs near did not launch, relative to EXP, e.g. "
                        "'{algorithm}_{motion}_{seed:d}' ({name}: a field, {name:d}: digits, {_}: anything)")
    p.add_argument("--config", action="append", default=None, metavar="[COLUMN=]KEY",
                   help="a key of each such run's own config.yaml / .hydra/config.yaml as a column, e.g. "
                        "motion=task.env.motion_file (repeatable; hydra overrides are always read)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless every figure and table the spec promises exists and is non-empty, "
                        "with no warning (CI)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from near.errors import SpecError

    if args.all:
        if args.exp or args.spec or args.out:
            raise SpecError("near report --all takes no EXP, --spec or --out (it pairs sweeps and specs itself)")
        return _run_all(args)
    exp = args.exp
    if not exp and args.spec:
        from near.report.spec import load

        exp = load(args.spec)["runs"]["root"]
    if not exp:
        raise SpecError("near report: give an experiment folder (e.g. experiments/demo), a --spec with "
                        "runs.root, or --all")
    return _report_one(args, exp, args.spec, args.out)


def _run_all(args: argparse.Namespace) -> int:
    """Report every sweep under --root once per matching spec (or with the derived default)."""
    from pathlib import Path

    from near.jobtable import JobTable
    from near.report.pipeline import plotting_dirs
    from near.report.spec import specs_for_sweep

    exps = sorted(p.parent for p in Path(args.root).glob("*/jobs.db"))
    if not exps:
        print(f"near report --all: no sweep under {args.root}/ (run `near sweep add` first)")
        return 0
    worst = 0
    for exp in exps:
        with JobTable.open(exp, readonly=True) as table:
            names = dict.fromkeys([table.sweep, exp.name])
        specs = next((found for name in names for d in plotting_dirs() if (found := specs_for_sweep(d, name))), [])
        for spec in specs or [None]:
            out = exp / "figures" / spec.stem if len(specs) > 1 else None
            print(f"== {exp} ({spec or 'default spec'})", flush=True)
            worst = max(worst, _report_one(args, exp, spec, out))
    return worst


def _report_one(args: argparse.Namespace, exp, spec, out) -> int:
    from near.report.pipeline import run_report

    rep = run_report(exp, spec, out, args.workers, not args.no_cache, force=args.force,
                     pattern=getattr(args, "pattern", None), config=getattr(args, "config", None))
    from near.search.study import has_search

    if has_search(exp):  # a search sweep: best trials, metric over trials, parameters
        from near.search.report import write_report

        rep.written += write_report(exp, rep.out)
    print(f"near report: {len(rep.written)} file(s) written to {rep.out}"
          + (f"; {len(rep.warnings)} warning(s)" if rep.warnings else ""))
    if not args.check:
        return 0
    wanted = sorted(set(rep.expected()) | set(rep.written))
    bad = [p for p in wanted if not p.is_file() or p.stat().st_size == 0]
    for p in bad:
        print(f"near report: check: missing or empty: {p}")
    ok = wanted and not bad and not rep.warnings
    print(f"near report: check {'passed' if ok else 'FAILED'}: {len(wanted) - len(bad)}/{len(wanted)} expected "
          f"file(s) present and non-empty, {len(rep.warnings)} warning(s)")
    return 0 if ok else 1
