"""Reconcile 10,000 SLURM jobs from their nodes' outcome files plus sacct, against sacct alone.

    python benchmarks/bench_reconcile.py [--jobs 10000]

Two tables of N queued jobs (scheduler ids of 10 arrays). The scheduler's answer is the same for
both: sacct says every task COMPLETED (the squeue/sacct calls themselves are measured on the real
cluster by bench_slurm.py; here the view is fixed so both runs see exactly the same one).
- anchor, sacct only: no outcome files (nodes died before writing): every job is concluded from
  sacct (lost -> pending), N changes;
- measured: every run dir holds its node's `started` and `finished 0` files: sync lists and reads
  2N files, folds them (N done, 2N outcomes recorded as folded) and checks sacct for what is left.
Target: the measured sync under 2 s. Printed LAST: its seconds and the ratio to the anchor.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from near.executors.outcomes import FINISHED, STARTED, Outcome, write_outcome  # noqa: E402
from near.executors.slurm import SchedulerView, sync  # noqa: E402
from near.jobtable import Change, JobSpec, JobTable  # noqa: E402


def make_table(exp: Path, n: int) -> list[str]:
    """n queued jobs with array-task scheduler ids; returns the ids."""
    sids = [f"{1000 + i // 1000}_{i % 1000}" for i in range(n)]
    with JobTable.create(exp, sweep=exp.name) as t:
        t.add([JobSpec(f"job{i:05d}", "rl", "true", {"seed": i}) for i in range(n)])
        t.claim("bench", limit=n, lease_s=None, to_state="queued")
        t.transition_many([Change(f"job{i:05d}", None, scheduler_id=sid) for i, sid in enumerate(sids)])
    return sids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    args = ap.parse_args()
    n = args.jobs
    quiet = lambda *a, **k: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="near-bench-reconcile-") as tmp:
        tmp = Path(tmp)
        anchor_exp, files_exp = tmp / "sacct_only", tmp / "files"
        sids = make_table(anchor_exp, n)
        make_table(files_exp, n)
        view = SchedulerView(accounted={sid: ("COMPLETED", "0:0", "") for sid in sids})
        t0 = time.perf_counter()
        for i, sid in enumerate(sids):
            run = files_exp / "runs" / f"job{i:05d}"
            write_outcome(run, Outcome(f"job{i:05d}", STARTED, scheduler_id=sid))
            write_outcome(run, Outcome(f"job{i:05d}", FINISHED, 0, scheduler_id=sid))
        write_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        a = sync(anchor_exp, log=quiet, view=view)
        anchor_s = time.perf_counter() - t0
        assert a.changes == {"pending": n}, a.changes

        t0 = time.perf_counter()
        b = sync(files_exp, log=quiet, view=view)
        files_s = time.perf_counter() - t0
        assert b.changes == {"running": n, "done": n}, b.changes
        with JobTable.open(files_exp) as t:
            assert t.counts()["done"] == n and sum(len(v) for v in t.folded().values()) == 2 * n
        t0 = time.perf_counter()
        again = sync(files_exp, log=quiet, view=view)  # nothing active is left: a no-op
        again_s = time.perf_counter() - t0
        assert again.checked == 0 and not again.changes

    print(f"(nodes writing {2 * n} outcome files took {write_s:.2f} s; a repeated sync {again_s:.3f} s)")
    print(f"anchor: sacct-only reconcile of {n} jobs (all lost -> pending): {anchor_s:.2f} s")
    print(f"FIGURE reconcile of {n} jobs from {2 * n} outcome files plus sacct: {files_s:.2f} s "
          f"(target < 2 s; {files_s / anchor_s:.2f}x the sacct-only reconcile)")


if __name__ == "__main__":
    main()
