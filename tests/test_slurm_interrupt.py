"""`near sweep submit` interrupted (Ctrl-C, SIGTERM) between claiming its jobs and sending them, on the
REAL local cluster: what was claimed but not sent goes back to pending, what was sent keeps its ids.

A driver process runs ``submit`` and signals itself at one chosen moment (while the code is frozen,
or right after the first array was sent), so the interruption lands exactly there, every time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from near.jobtable import JobSpec
from tests._slurm_helpers import REPO, jobs, make_sweep, require_cluster

DRIVER = """\
import os, signal, sys
from near.executors import slurm
from near.executors.slurm_profile import load_profile
from near.jobtable import JobTable
from near.snapshot import Snapshotter

exp, moment, sig = sys.argv[1], sys.argv[2], getattr(signal, sys.argv[3])
cls, name = (Snapshotter, "freeze") if moment == "snapshot" else (JobTable, "set_scheduler_id")
real = getattr(cls, name)

def then_signal(*args, **kwargs):
    out = real(*args, **kwargs)
    os.kill(os.getpid(), sig)   # lands where Python next checks for signals
    return out

setattr(cls, name, then_signal)
try:
    slurm.submit(exp, load_profile(sys.argv[4]), hold=True, log=lambda m: None)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""


@pytest.mark.parametrize("moment, sig", [("snapshot", "SIGINT"), ("snapshot", "SIGTERM"), ("sent", "SIGTERM")])
def test_an_interrupted_submit_leaves_no_job_queued_without_a_scheduler_id(tmp_path: Path, moment: str,
                                                                            sig: str) -> None:
    require_cluster()
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "code.txt").write_text("x\n")
    # two stages: two arrays, so that an interruption after the first one leaves the second unsent
    exp = make_sweep(tmp_path / "intr", [JobSpec(job_id=f"{stage}{i}", stage=stage, command="true", workdir=str(wd))
                                         for stage in ("a", "b") for i in range(2)])
    (tmp_path / "driver.py").write_text(DRIVER)
    try:
        p = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(exp), moment, sig,
                            str(REPO / "slurm" / "local.yaml")], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
        got = jobs(exp)
        sent = [j for j in got.values() if j.state == "queued"]
        # whatever is queued was sent, with its ids; everything else is pending again, nothing charged
        assert all(j.scheduler_id for j in sent), [(j.job_id, j.state, j.scheduler_id) for j in got.values()]
        assert all(j.state == "pending" and j.attempts == 0 for j in got.values() if j not in sent)
        assert len(sent) == (2 if moment == "sent" else 0), [(j.job_id, j.state) for j in got.values()]
        assert p.returncode == 130, p.stdout + p.stderr   # stopped as Ctrl-C stops, not killed
    finally:
        # whole arrays: an interrupted submit may not have recorded every task's id
        ids = sorted({j.scheduler_id.split("_")[0] for j in jobs(exp).values() if j.scheduler_id})
        if ids:
            subprocess.run(["scancel", *ids], check=False)
