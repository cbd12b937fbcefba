"""The job table on real SQLite files, including several processes claiming at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from near.errors import TableError
from near.jobtable import Change, JobSpec, JobTable


def _grid(n_seeds: int = 2) -> list[JobSpec]:
    """ncsn (shared by both ablations) -> rl per ablation, per seed."""
    jobs = []
    for seed in range(n_seeds):
        ncsn = JobSpec(f"n{seed}", "ncsn", "train ncsn run_dir=${run_dir} seed=" + str(seed),
                       {"algorithm": "NEAR", "seed": seed}, sweep="t", uses=2)
        jobs.append(ncsn)
        for abl in ("a", "b"):
            jobs.append(JobSpec(f"r{seed}{abl}", "rl", "train rl ckpt=${ncsn.run_dir}/nn/checkpoint.pth",
                                {"algorithm": "NEAR", "seed": seed, "ablation": abl},
                                deps={"ncsn": ncsn.job_id}, sweep="t"))
    return jobs


def test_add_dedups_and_counts(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    r = t.add(_grid(2))
    assert (r.new, r.existing, r.shared) == (6, 0, 2)
    r = t.add(_grid(2))
    assert (r.new, r.existing) == (0, 6)
    r = t.add(_grid(3))  # one more seed: only its 3 jobs are new
    assert (r.new, r.existing) == (3, 6)
    assert len(t) == 9
    assert t.axes() == ["algorithm", "seed", "ablation"]


def test_add_rejects_unknown_dependency_and_leaves_table_untouched(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    t.add(_grid(1))
    with pytest.raises(TableError, match="needs ncsn=nope"):
        t.add([JobSpec("x", "ncsn", "true"), JobSpec("y", "rl", "true", deps={"ncsn": "nope"})])
    assert len(t) == 3


def test_claim_respects_dependencies_and_resolves_references(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    t.add(_grid(1))
    got = t.claim("w", limit=10, lease_s=30)
    assert [j.job_id for j in got] == ["n0"]
    assert got[0].attempts == 1 and got[0].state == "running"
    assert t.claim("w", limit=10) == []
    assert t.mark_done("n0", owner="w")
    got = t.claim("w", limit=10)
    assert sorted(j.job_id for j in got) == ["r0a", "r0b"]
    exp = (tmp_path / "exp").resolve()
    assert got[0].command == f"train rl ckpt={exp}/runs/n0/nn/checkpoint.pth"
    assert got[0].run_dir == str(exp / "runs" / got[0].job_id)


def test_transition_is_compare_and_set(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    t.add(_grid(1))
    t.claim("w1", 1)
    assert not t.mark_done("n0", owner="w2")  # not the lease holder
    assert not t.transition("n0", "done", expect=("pending",))
    assert t.mark_done("n0", owner="w1")
    assert not t.mark_done("n0")  # already done: not active
    with pytest.raises(TableError, match="unknown job state"):
        t.transition("n0", "finished")


def test_transition_many_is_compare_and_set_per_job_in_one_transaction(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    t.add(_grid(2))
    t.claim("w", 2, to_state="queued")  # n0, n1 queued
    assert t.mark_running("n1")  # the node started n1 after the caller listed it as queued
    ok = t.transition_many([
        Change("n0", "cancelled", expect=("queued",), reason="cancelled on the cluster", exit_code=0),
        Change("n1", "cancelled", expect=("queued",), reason="cancelled on the cluster"),  # stale: skipped
        Change("r1a", "done", expect=("queued", "running")),  # pending: skipped
    ], batch=2)  # two transactions
    assert ok == [True, False, False]
    assert t.get("n0").state == "cancelled" and t.get("n0").reason == "cancelled on the cluster"
    assert t.get("n1").state == "running" and t.get("r1a").state == "pending"
    # side effects as with transition(): events, finished time, dependents blocked
    assert [e.to_state for e in t.history("n0")] == ["created", "queued", "cancelled"]
    assert t.get("n0").finished is not None
    assert {t.get(j).state for j in ("r0a", "r0b")} == {"blocked"}
    assert [e.to_state for e in t.histories(["n0", "r0a", "nope"])["n0"]] == ["queued", "cancelled"]
    with pytest.raises(TableError, match="no job nope"):
        t.transition_many([Change("n1", "done", expect=("running",)), Change("nope", "done")])
    assert t.get("n1").state == "running"  # its batch was rolled back
    with pytest.raises(TableError, match="unknown job state"):
        t.transition_many([Change("n1", "finished")])


def test_failed_dependency_blocks_and_reset_unblocks(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    t.add(_grid(1))
    t.claim("w", 1)
    t.mark_failed("n0", "exit code 1", exit_code=1)
    c = t.counts()
    assert (c["failed"], c["blocked"]) == (1, 2)
    assert "n0" in t.get("r0a").reason
    # a job added later on top of the failed one starts blocked
    t.add([JobSpec("r0c", "rl", "x", {"ablation": "c"}, deps={"ncsn": "n0"})])
    assert t.get("r0c").state == "blocked"
    assert t.reset(["failed"]) == 4
    assert t.counts()["pending"] == 4
    assert t.get("n0").attempts == 0
    assert [e.to_state for e in t.history("r0a")] == ["created", "blocked", "pending"]


def test_lease_expiry_requeues_then_fails(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    t.add([JobSpec("j", "rl", "true", max_attempts=2)])
    t.claim("dead", 1, lease_s=0.01)
    time.sleep(0.05)
    assert t.requeue_stale() == [("j", "pending")]
    assert t.get("j").attempts == 1
    t.claim("dead2", 1, lease_s=0.01)
    assert t.heartbeat("other", ["j"], 10) == set()
    time.sleep(0.05)
    assert t.requeue_stale() == [("j", "failed")]
    j = t.get("j")
    assert j.state == "failed" and "lease expired" in j.reason and j.attempts == 2


def test_release_refunds_attempt(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    t.add([JobSpec("j", "rl", "true")])
    t.claim("w", 1)
    assert t.release("j", "interrupted by SIGINT", owner="w")
    j = t.get("j")
    assert (j.state, j.attempts, j.reason) == ("pending", 0, "interrupted by SIGINT")


def test_foreign_and_corrupt_files_are_named(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 10)
    with pytest.raises(TableError, match=str(junk)):
        JobTable.open(junk)
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE x(a)")
    with pytest.raises(TableError, match="foreign.db: not a near job table"):
        JobTable.open(foreign)
    with pytest.raises(TableError, match="no job table"):
        JobTable.open(tmp_path / "missing")
    # a truncated real table
    t = JobTable.create(tmp_path / "exp")
    t.add(_grid(1))
    t.close()
    db = tmp_path / "exp" / "jobs.db"
    data = db.read_bytes()
    db.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    with pytest.raises(TableError, match="jobs.db"):
        JobTable.open(db).jobs()


def test_frame_and_export(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    t.add(_grid(1))
    df = t.to_frame()
    for col in ("job_id", "stage", "state", "reason", "exit_code", "attempts", "run_dir", "command",
                "scheduler_id", "algorithm", "seed", "ablation"):
        assert col in df.columns
    assert pd.isna(df.set_index("job_id").loc["n0", "ablation"])
    t.export(tmp_path / "x.csv")
    t.export(tmp_path / "x.parquet")
    assert len(pd.read_csv(tmp_path / "x.csv")) == 3
    assert set(pd.read_parquet(tmp_path / "x.parquet")["job_id"]) == {"n0", "r0a", "r0b"}


_CLAIMER = textwrap.dedent("""
    import sys, time
    from near.jobtable import JobTable
    t = JobTable.open(sys.argv[1])
    owner = sys.argv[2]
    got = []
    while True:
        jobs = t.claim(owner, limit=3, lease_s=60)
        if not jobs:
            if t.counts()["pending"] == 0:
                break
            time.sleep(0.01)
            continue
        for j in jobs:
            got.append(j.job_id)
            assert t.mark_done(j.job_id, owner=owner), j.job_id
    print(" ".join(got))
""")


def test_concurrent_processes_never_claim_the_same_job(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    t.add([JobSpec(f"j{i:04d}", "rl", "true") for i in range(400)])
    procs = [
        subprocess.Popen([sys.executable, "-c", _CLAIMER, str(tmp_path / "exp"), f"w{k}"],
                         stdout=subprocess.PIPE, text=True)
        for k in range(4)
    ]
    claimed = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        claimed += out.split()
    assert len(claimed) == 400 and len(set(claimed)) == 400
    assert t.counts()["done"] == 400
    assert all(j.attempts == 1 for j in t.jobs())


_ADDER = textwrap.dedent("""
    import sys
    from near.jobtable import Change, JobSpec, JobTable
    t = JobTable.open_or_create(sys.argv[1], sweep="x")
    print(t.add([JobSpec(f"j{k}", "rl", "true") for k in range(50)]).new)
""")


def test_concurrent_create_and_add_of_the_same_sweep(tmp_path):
    target = tmp_path / "experiments" / "demo.v2"  # a dot in the sweep name is still a folder
    procs = [subprocess.Popen([sys.executable, "-c", _ADDER, str(target)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    new = 0
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        new += int(out)
    assert new == 50
    assert len(JobTable.open(target)) == 50
    assert sorted(f.name for f in target.iterdir() if not f.name.startswith("jobs.db")) == []
