"""`near sweep submit|sync|wait|cancel`: the SLURM executor's commands (in the sweep group)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add submit, sync, wait and cancel to the `near sweep` subcommands."""
    p = subparsers.add_parser("submit", help="submit the sweep's pending jobs to SLURM as job arrays")
    p.add_argument("exp", help="experiment folder (holds jobs.db)")
    p.add_argument("--profile", default="slurm/local.yaml", help="cluster profile YAML (default: %(default)s)")
    p.add_argument("--stage", action="append", help="only these stages (repeatable)")
    p.add_argument("--resubmit", action="append", default=[], choices=["failed", "cancelled", "blocked"],
                   help="also reset and submit jobs in this state (repeatable); otherwise they stay")
    p.add_argument("--hold", action="store_true", help="submit held (sbatch --hold); release with scontrol")
    p.set_defaults(func=_submit)

    p = subparsers.add_parser("sync", help="reconcile the job table with SLURM (squeue, sacct)")
    p.add_argument("exp", help="experiment folder")
    p.set_defaults(func=_sync)

    p = subparsers.add_parser("wait", help="sync until every job has finished; resubmit jobs put back to pending")
    p.add_argument("exp", help="experiment folder")
    p.add_argument("--profile", default="slurm/local.yaml",
                   help="profile for resubmissions (default: %(default)s); 'none' never resubmits")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between syncs (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.set_defaults(func=_wait)

    p = subparsers.add_parser("cancel", help="cancel jobs on SLURM and record them cancelled")
    p.add_argument("exp", help="experiment folder")
    p.add_argument("--state", action="append", choices=["pending", "queued", "running", "blocked"],
                   help="only jobs in this state (repeatable; default: pending, queued, running)")
    p.add_argument("--job", action="append", help="only this job id (or unique prefix; repeatable)")
    p.set_defaults(func=_cancel)


def _submit(args: argparse.Namespace) -> int:
    from near.executors.slurm import submit
    from near.executors.slurm_profile import load_profile

    profile = load_profile(args.profile)
    res = submit(args.exp, profile, stages=args.stage, resubmit=args.resubmit, hold=args.hold)
    skipped = ", ".join(f"{n} {why}" for why, n in res.skipped.items())
    print(f"{res.submitted} job(s) submitted in {res.sbatch_calls} sbatch call(s) "
          f"[{profile.name}] in {res.seconds:.2f} s" + (f"; skipped: {skipped}" if skipped else ""))
    return 0


def _sync(args: argparse.Namespace) -> int:
    from near.executors.slurm import sync

    res = sync(args.exp)
    changes = ", ".join(f"{n} -> {st}" for st, n in sorted(res.changes.items())) or "no changes"
    print(f"synced {res.checked} active job(s) with {res.scheduler_calls} scheduler call(s) in "
          f"{res.seconds:.2f} s: {changes}" + (f"; scancelled {res.scancelled}" if res.scancelled else ""))
    return 0


def _wait(args: argparse.Namespace) -> int:
    """Exit 0 when every job is done, 1 when some ended otherwise (or the wait timed out)."""
    from functools import partial

    from near.executors.slurm import wait
    from near.executors.slurm_profile import load_profile
    from near.jobtable import JobTable
    from near.search.controller import hook_for

    profile = None if args.profile == "none" else load_profile(args.profile)
    log = partial(print, flush=True)
    with JobTable.open(args.exp) as table:
        search = hook_for(table, log=log)
    res = wait(args.exp, profile, poll_s=args.poll, timeout_s=args.timeout, log=log,
               hooks=[search] if search else [])
    print(f"wait: finished in {res.seconds:.0f} s" + (f" ({res.resubmitted} resubmitted)" if res.resubmitted else "")
          + ("; every job is done" if res.all_done else "; NOT every job is done (see `near sweep status`)"))
    return 0 if res.all_done else 1


def _cancel(args: argparse.Namespace) -> int:
    from near.executors.slurm import cancel

    states = args.state or ["pending", "queued", "running"]
    res = cancel(args.exp, states=states, job_ids=args.job)
    print(f"cancelled {res.cancelled} job(s); scancel sent for {res.scancelled}")
    return 0
