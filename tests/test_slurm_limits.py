"""Cluster limits on the REAL local cluster: arrays split to fit MaxArraySize, MaxSubmitJobs respected.

The profile lowers the limits (``max_array_size: 5``, ``max_submit_jobs``) so a small sweep is split
the way a 5,000-job sweep is at SLURM's default MaxArraySize of 1001 (benchmarks/bench_slurm_limits.py
runs that one).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from near.jobtable import JobSpec, JobTable
from tests._slurm_helpers import REPO, jobs, make_sweep, near, require_cluster

LOCAL = REPO / "slurm" / "local.yaml"


@pytest.mark.slurm
def test_split_arrays_with_aftercorr_chunks_and_a_submit_limit_all_done(tmp_path: Path) -> None:
    require_cluster()
    n = 12
    exp = make_sweep(tmp_path / "split", [
        *[JobSpec(job_id=f"a{i:02d}", stage="a", command="touch ${run_dir}/done") for i in range(n)],
        # b_i runs only if a_i finished before it started (aftercorr on the matching chunk)
        *[JobSpec(job_id=f"b{i:02d}", stage="b", command="test -f ${up.run_dir}/done && touch ${run_dir}/done",
                  deps={"up": f"a{i:02d}"}) for i in range(n)],
    ])
    prof = tmp_path / "small.yaml"
    prof.write_text(LOCAL.read_text() + "max_array_size: 5\nmax_submit_jobs: 16\n")
    try:
        first = near("sweep", "submit", exp, "--profile", prof).stdout
        # at most 16 in the queue (fewer while other tests' jobs run as the same user): with nothing
        # else queued, all 12 a-jobs (5+5+2) and the first 4 b-jobs (aftercorr on a's first chunk)
        k = int(first.splitlines()[-1].split()[0])
        assert 0 < k <= 16 and f"{2 * n - k} job(s) stay pending" in first and "MaxSubmitJobs" in first, first
        out = near("sweep", "wait", exp, "--profile", prof, "--poll", "1", "--timeout", "240").stdout
        assert "every job is done" in out, out
        # b jobs sent with their a chunk wait for task k of it; later ones for the exact a tasks they need
        b_lines = re.findall(r"submitted \d+ b job\(s\) .*", first + out)
        assert b_lines and all("(aftercorr:" in b or "(afterok:" in b for b in b_lines), b_lines
        if k == 16:
            assert "aftercorr:" in b_lines[0], first
    finally:
        near("sweep", "cancel", exp)
    recs = jobs(exp)
    assert {r.state for r in recs.values()} == {"done"}
    assert all((Path(r.run_dir) / "done").exists() for r in recs.values())
    tasks: dict[str, list[int]] = defaultdict(list)
    for r in recs.values():
        base, _, task = r.scheduler_id.partition("_")
        tasks[base].append(int(task or 0))
    # every array fits: at most 5 tasks, indices 0..4
    assert all(len(t) <= 5 and max(t) < 5 for t in tasks.values()), dict(tasks)
    submits = [int(m) for m in re.findall(r"submitted (\d+) [ab] job", first + out)]
    assert sum(submits) == 2 * n and len(submits) == len(tasks) >= 6
    with JobTable.open(exp) as t:
        # a job held back by the limit was put back, not charged an attempt
        assert all(r.attempts == 1 for r in t.jobs())
