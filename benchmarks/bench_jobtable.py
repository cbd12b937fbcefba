"""8 processes claiming and finishing 10,000 jobs on one SQLite job table.

    python benchmarks/bench_jobtable.py [--procs 8] [--jobs 10000] [--batch 1]

Each worker process loops `claim(owner, limit=batch)` -> `mark_done(job, owner=owner)` until no
pending job is left, writing the ids it claimed to a file. The check: every job claimed exactly
once (union of the files and the table's own history), all done. Anchor: one process doing the
same on its own table in the same run. Prints LAST the figure: transitions per second (a claim and
a done are one transition each) with 8 processes, and the ratio to the single process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORKER = """
import sys, time
from near.jobtable import JobTable
table = JobTable.open(sys.argv[1]); owner = sys.argv[2]; batch = int(sys.argv[4])
got = []
while True:
    jobs = table.claim(owner, limit=batch, lease_s=300)
    if not jobs:
        if table.counts()["pending"] == 0:
            break
        time.sleep(0.001)
        continue
    for j in jobs:
        got.append(j.job_id)
        assert table.mark_done(j.job_id, owner=owner), j.job_id
open(sys.argv[3], "w").write("\\n".join(got))
"""


def run(tmp: Path, name: str, procs: int, n: int, batch: int) -> tuple[float, int]:
    from near.jobtable import JobSpec, JobTable

    table = JobTable.create(tmp / name)
    table.add([JobSpec(f"{i:08x}", "rl", "true", {"i": i}) for i in range(n)])
    start = time.perf_counter()
    ps = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp / name), f"w{k}", str(tmp / f"{name}.{k}"),
                            str(batch)]) for k in range(procs)]
    for p in ps:
        assert p.wait() == 0
    took = time.perf_counter() - start
    claimed = Counter()
    for k in range(procs):
        claimed.update(x for x in (tmp / f"{name}.{k}").read_text().split("\n") if x)
    doubles = sum(c - 1 for c in claimed.values() if c > 1)
    runs = Counter(r[0] for r in table._conn.execute("SELECT job_id FROM events WHERE to_state='running'"))
    doubles += sum(c - 1 for c in runs.values() if c > 1)
    assert len(claimed) == n and table.counts()["done"] == n, (len(claimed), table.counts())
    table.close()
    return took, doubles


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=1, help="jobs per claim")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="near-bench-table-"))
    one, d1 = run(tmp, "one", 1, args.jobs, args.batch)
    print(f"1 process: {args.jobs} jobs in {one:.2f} s, {2 * args.jobs / one:.0f} transitions/s, double claims {d1}")
    many, dn = run(tmp, "many", args.procs, args.jobs, args.batch)
    print(f"{args.procs} processes: {args.jobs} jobs in {many:.2f} s, double claims {dn}")
    rate = 2 * args.jobs / many
    print(f"FIGURE {args.procs} processes claiming+finishing {args.jobs} jobs: {rate:.0f} transitions/s, "
          f"double claims: {dn} ({rate / (2 * args.jobs / one):.2f}x the single-process rate)")


if __name__ == "__main__":
    main()
