"""Broken job tables and broken disks, through the real CLI: a clear `near: error: ...` (exit 2)
naming the file and job, the table byte-identical, and no finished job run again.

The disk-full test mounts a real 3 MiB tmpfs (root only; skipped otherwise) and unmounts it in
its teardown.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from _tmpfs import tmpfs

from near.jobtable import SCHEMA_VERSION, JobSpec, JobTable

REPO = Path(__file__).resolve().parents[1]


def near(*args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "near", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _sweep(tmp_path: Path, jobs: list[JobSpec]) -> Path:
    exp = tmp_path / "experiments" / "t"
    with JobTable.create(exp, sweep="t") as t:
        t.add(jobs)
    return exp


def _poke(db: Path, sql: str, *args) -> None:
    """Change the file behind near's back (as a crash or a foreign tool would)."""
    conn = sqlite3.connect(db)
    conn.execute(sql, args)
    conn.commit()
    conn.close()  # the last connection: the WAL is folded into the file and removed


def _refused(tmp_path: Path, db: Path, commands: list[tuple], *needles: str) -> None:
    before = db.read_bytes()
    for cmd in commands:
        r = near(*cmd, cwd=tmp_path)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert r.stderr.startswith("near: error: ") and "Traceback" not in r.stderr, r.stderr
        for needle in needles:
            assert needle in r.stderr, (cmd, r.stderr)
        assert db.read_bytes() == before, cmd


def test_corrupt_params_json_is_named_and_nothing_is_claimed(tmp_path):
    exp = _sweep(tmp_path, [JobSpec("good", "rl", "true", {"seed": 0}), JobSpec("bad1", "rl", "true", {"seed": 1})])
    db = exp / "jobs.db"
    _poke(db, "UPDATE jobs SET params='{\"seed\": 1' WHERE job_id='bad1'")
    # run: the claim is rolled back, the job is not left running under a controller that gave up
    _refused(tmp_path, db, [("sweep", "status", exp), ("sweep", "run", exp), ("sweep", "export", exp)],
             str(db), "job bad1", "params JSON")
    with JobTable.open(exp) as t:
        assert {j: t._conn.execute("SELECT state FROM jobs WHERE job_id=?", (j,)).fetchone()[0]
                for j in ("good", "bad1")} == {"good": "pending", "bad1": "pending"}


def test_corrupt_schema_version_is_named(tmp_path):
    exp = _sweep(tmp_path, [JobSpec("a", "rl", "true")])
    db = exp / "jobs.db"
    _poke(db, "UPDATE meta SET value='2x' WHERE key='schema_version'")
    _refused(tmp_path, db, [("sweep", "status", exp), ("sweep", "run", exp)], str(db), "schema_version '2x'")


def test_foreign_database_with_a_near_meta_table_but_no_jobs(tmp_path):
    exp = tmp_path / "experiments" / "t"
    exp.mkdir(parents=True)
    db = exp / "jobs.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("magic", "near-jobtable"), ("schema_version", "2")])
    conn.commit()
    conn.close()
    _refused(tmp_path, db, [("sweep", "status", exp), ("sweep", "run", exp)], str(db), "no jobs, deps, events table")


def test_version_1_table_is_migrated(tmp_path):
    exp = _sweep(tmp_path, [JobSpec("a", "rl", "true")])
    db = exp / "jobs.db"
    conn = sqlite3.connect(db)
    for col in ("crashes", "requeues", "charged", "progress"):
        conn.execute(f"ALTER TABLE jobs DROP COLUMN {col}")
    conn.execute("DROP TABLE outcomes")
    conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with JobTable.open(exp) as t:
        assert t.meta()["schema_version"] == str(SCHEMA_VERSION)
        assert (t.get("a").crashes, t.get("a").charged) == (0, 0) and t.folded() == {}
        assert t.by_axis() == {"stage": {"rl": {"pending": 1}}}


# --------------------------------------------------------------------------- a real full disk
@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "mnt", "3M") as mnt:
        yield mnt


def test_disk_full_at_commit_is_clear_and_no_finished_job_runs_again(tmp_path, small_disk):
    runs = tmp_path / "runs.txt"  # off the small disk: one line per start of a job
    fill = f"head -c 20000000 /dev/zero > {small_disk}/filler 2>/dev/null"
    exp = small_disk / "experiments" / "t"
    with JobTable.create(exp, sweep="t") as t:
        t.add([JobSpec("a", "rl", f"echo a >> {runs}"),
               # finishes fine, but leaves the disk full: recording its result cannot commit
               JobSpec("filler", "rl", f"echo filler >> {runs}; {fill}; true"),
               JobSpec("c", "rl", f"echo c >> {runs}")])
    r = near("sweep", "run", exp, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("near: error: ") and "disk full" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert runs.read_text().split() == ["a", "filler"]
    # the table on the full disk: either it opens, or it says "disk full" (never "corrupt")
    r = near("sweep", "status", exp, cwd=tmp_path)
    assert r.returncode == 0 or ("disk full" in r.stderr and "corrupt" not in r.stderr), r.stderr
    (small_disk / "filler").unlink()
    r = near("sweep", "run", exp, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "outcome recorded by its supervisor" in r.stdout
    assert runs.read_text().split() == ["a", "filler", "c"]  # the finished job did not run again
    with JobTable.open(exp) as t:
        assert {j.job_id: (j.state, j.attempts) for j in t.jobs()} == \
            {"a": ("done", 1), "filler": ("done", 1), "c": ("done", 1)}
