"""Controller overhead of a search per trial: ask (sample) + add (job table) + dispatch (claim,
mark done) + tell (read the trial's event file, tell the study), for 1,000 trials.

The "jobs" do no work: each claimed job gets a 3-point event file written for it (outside the
timed part) and is marked done, so everything timed is what the controller pays per trial. The
anchor, measured in the same run, is a plain grid of the same size: add all jobs, then claim and
mark done each one (what the job table costs a grid sweep per job). Printed last: the search's
overhead per trial and its ratio to the anchor.

    python benchmarks/bench_search.py [--trials 1000] [--parallel 8] [--sampler tpe|random]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _search_objective import _record, scalar_event  # noqa: E402

from near.add import add_spec  # noqa: E402
from near.jobtable import JobSpec, JobTable, run_dir_for  # noqa: E402
from near.search.controller import hook_for  # noqa: E402


def fake_job_output(exp: Path, job_id: str, value: float) -> None:
    """What a finished trial leaves behind: an event file with the metric."""
    run = Path(run_dir_for(exp, job_id))
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "events.out.tfevents.0.bench", "wb") as fh:
        for step in range(3):
            fh.write(_record(scalar_event("obj/f", value + step, step)))


def search(tmp: Path, trials: int, parallel: int, sampler: str) -> tuple[float, float, int]:
    spec = tmp / "search.yaml"
    spec.write_text(f"""
name: bench
workdir: {tmp}
search:
  sampler: {sampler}
  trials: {trials}
  parallel: {parallel}
  seed: 0
  metric: obj/f
  space:
    x: {{uniform: [-5, 5]}}
    y: {{loguniform: [1e-3, 10]}}
    k: {{choice: [a, b, c]}}
stages:
  - name: f
    command: python objective.py --x ${{x}} --y ${{y}} --k ${{k}} --run-dir ${{run_dir}}
""")
    add_spec(spec, tmp, validate=False)
    exp = tmp / "bench"
    table = JobTable.open(exp)
    hook = hook_for(table, log=lambda m: None)
    controller = side = 0.0
    while True:
        t0 = time.perf_counter()
        hook(table)                                            # tell finished, ask + add new
        claimed = table.claim("bench", limit=parallel, lease_s=60)   # dispatch
        t1 = time.perf_counter()
        for job in claimed:                                    # the "job" runs (not controller time)
            fake_job_output(exp, job.job_id, float(len(job.job_id)))
        t2 = time.perf_counter()
        for job in claimed:
            table.mark_done(job.job_id, owner="bench")
        t3 = time.perf_counter()
        controller += (t1 - t0) + (t3 - t2)
        side += t2 - t1
        if not claimed and hook.finished():
            break
    n = len(table)
    table.close()
    return controller, side, n


def grid(tmp: Path, n: int) -> float:
    jobs = [JobSpec(f"{k:012x}", "f", f"python objective.py --i {k}", {"i": k}) for k in range(n)]
    table = JobTable.create(tmp / "grid" / "jobs.db", sweep="grid")
    t0 = time.perf_counter()
    table.add(jobs)
    while True:
        claimed = table.claim("bench", limit=8, lease_s=60)
        if not claimed:
            break
        for job in claimed:
            table.mark_done(job.job_id, owner="bench")
    took = time.perf_counter() - t0
    table.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="near-bench-search-"))
    try:
        anchor = grid(tmp, args.trials) / args.trials
        print(f"anchor: grid of {args.trials} jobs, add + claim + done: {anchor * 1e3:.2f} ms per job")
        took, side, n = search(tmp, args.trials, args.parallel, args.sampler)
        assert n == args.trials, n
        per = took / args.trials
        print(f"search: {args.trials} {args.sampler} trials, {args.parallel} in flight: {took:.1f} s controller time "
              f"({side:.1f} s writing the fake jobs' event files, not counted)")
        print(f"FIGURE search controller overhead per trial (ask + add + dispatch + tell, {args.sampler}, "
              f"{args.trials} trials): {per * 1e3:.1f} ms = {per / anchor:.0f}x a grid job's table cost "
              f"({anchor * 1e3:.2f} ms)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
