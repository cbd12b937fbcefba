"""`near report EXP [--spec plotting/NAME.yaml] [--out DIR]`: regenerate figures and tables from logs."""

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
    p.add_argument("exp", help="experiment folder, e.g. experiments/demo (holds jobs.db and runs/)")
    p.add_argument("--spec", default=None, help="plotting spec YAML (default: matched by sweep name)")
    p.add_argument("--out", default=None, help="output folder (default: EXP/figures)")
    p.add_argument("--workers", type=int, default=None, help="processes that decode event files (default: CPUs)")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write EXP/.cache (re-read everything)")
    p.add_argument("--force", action="store_true", help="redraw even when nothing changed since the last report")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless every figure and table the spec promises exists and is non-empty, "
                        "with no warning (CI)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from near.report.pipeline import run_report

    rep = run_report(args.exp, args.spec, args.out, args.workers, not args.no_cache, force=args.force)
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
