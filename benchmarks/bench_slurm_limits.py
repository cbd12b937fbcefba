"""A 5,000-job sweep (one resource group of trivial ``true`` jobs) run to the end on the local
cluster at SLURM's default MaxArraySize (1001): every job must end done; prints the number of
sbatch calls (counted by an ``sbatch`` shim on PATH that calls the real one) beside the minimum,
ceil(jobs / MaxArraySize).

Too slow for the test suite on a 2-core node (each task starts a Python interpreter under srun:
0.7 tasks/s measured on the shared 2-core machine, so about 2 hours for 5,000); ``--hold`` submits
the 5,000 held, checks the split and cancels them (seconds).
tests/test_slurm_limits.py runs the same split at a lowered limit. The jobs run at nice 15 (the
profile's setup line) so that the machine stays usable meanwhile.
Usage: .venv/bin/python benchmarks/bench_slurm_limits.py [--jobs 5000] [--poll 5]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_slurm import require_cluster, sbatch_shim  # noqa: E402

from near.executors.slurm import cancel, cluster_limits, submit, wait  # noqa: E402
from near.executors.slurm_profile import load_profile  # noqa: E402
from near.jobtable import DONE, JobSpec, JobTable  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--poll", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=4 * 3600)
    ap.add_argument("--hold", action="store_true",
                    help="only submit (held) and check the split, then cancel: seconds instead of hours")
    args = ap.parse_args()
    require_cluster()
    profile = load_profile(REPO / "slurm" / "local.yaml")
    profile.setup = [*profile.setup, "renice -n 15 -p $$ >/dev/null"]
    profile.mem, profile.time = "100M", 10
    limits = cluster_limits(profile)
    with tempfile.TemporaryDirectory(prefix="near-bench-limits-") as tmp:
        calls = sbatch_shim(Path(tmp))
        os.environ["PATH"] = f"{tmp}:{os.environ['PATH']}"
        exp = Path(tmp) / f"limits{args.jobs}"
        with JobTable.create(exp / "jobs.db", sweep=exp.name) as t:
            t.add([JobSpec(job_id=f"t{i:05d}", stage="t", command="true", params={"i": i})
                   for i in range(args.jobs)])
        t0 = time.monotonic()
        try:
            sub = submit(exp, profile, hold=args.hold, log=lambda m: print(m, flush=True))
            print(f"submit: {sub.submitted} job(s) in {sub.sbatch_calls} sbatch call(s), {sub.seconds:.1f} s", flush=True)
            if not args.hold:
                res = wait(exp, profile, poll_s=args.poll, timeout_s=args.timeout, log=lambda m: print(m, flush=True))
        finally:
            cancel(exp)
        wall = time.monotonic() - t0
        with JobTable.open(exp) as t:
            counts = t.counts()
            arrays = Counter(j.scheduler_id.split("_")[0] for j in t.jobs() if j.scheduler_id)
        n_calls = len(calls.read_text().splitlines()) if calls.exists() else 0
    print(f"MaxArraySize {limits.max_array_size}, MaxSubmitJobs {limits.max_submit}, MaxJobCount {limits.max_jobs}")
    print(f"arrays: {len(arrays)}, largest {max(arrays.values())} tasks; {sum(arrays.values())} jobs submitted; "
          f"{counts.get(DONE, 0)}/{args.jobs} done in {wall:.0f} s ({args.jobs / wall:.1f} jobs/s)")
    if max(arrays.values()) > limits.max_array_size or sum(arrays.values()) != args.jobs:
        sys.exit("an array does not fit MaxArraySize, or not every job was submitted")
    if not args.hold and (counts.get(DONE, 0) != args.jobs or not res.all_done):
        sys.exit(f"NOT every job is done: {counts}")
    minimum = math.ceil(args.jobs / limits.max_array_size)
    print(f"sbatch calls: {n_calls} for {args.jobs} jobs (minimum ceil({args.jobs}/{limits.max_array_size}) = "
          f"{minimum}; ratio {n_calls / minimum:.2f})")


if __name__ == "__main__":
    main()
