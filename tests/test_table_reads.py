"""The job table's read paths: `status`, `show` and `export` on a read-only table, the tallies
`status` counts from, and broken input (a malformed page, an unknown state, a closed pipe) through
the real CLI: a clear `near: error: ...` naming the file and job, exit 2, never a traceback.

The read-only test mounts a real tmpfs and remounts it read-only when run as root (root writes
through `chmod a-w`), and uses `chmod a-w` otherwise.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
from _tmpfs import tmpfs

from near.jobtable import FAILED, PENDING, RUNNING, SCHEMA_VERSION, Change, JobSpec, JobTable
from near.jobtable.schema import TALLY_COUNT


def near(*args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "near", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _refused(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("near: error: ") and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)


def _grid(n_seeds: int = 3) -> list[JobSpec]:
    """ncsn -> rl for two algorithms x ``n_seeds`` seeds."""
    jobs = []
    for alg in ("NEAR", "AMP"):
        ncsn = JobSpec(f"n-{alg}", "ncsn", "true", {"algorithm": alg})
        jobs.append(ncsn)
        jobs += [JobSpec(f"r-{alg}-{s}", "rl", "true", {"algorithm": alg, "seed": s}, deps={"ncsn": ncsn.job_id})
                 for s in range(n_seeds)]
    return jobs


def _sweep(tmp_path: Path, jobs: list[JobSpec], axes=("algorithm", "seed")) -> Path:
    exp = tmp_path / "experiments" / "t"
    with JobTable.create(exp, sweep="t") as t:
        t.add(jobs, axes=list(axes))
    return exp


def _python_counts(t: JobTable) -> dict:
    """What `status` shows per axis, counted from the decoded records."""
    out: dict = {a: {} for a in ["stage"] + t.axes()}
    for j in t.jobs():
        for a in out:
            v = j.stage if a == "stage" else j.params.get(a)
            if v is not None:
                row = out[a].setdefault(str(v), {})
                row[j.state] = row.get(j.state, 0) + 1
    return out


def _stored_tallies(t: JobTable) -> set:
    stored = t._conn.execute("SELECT key, type, value, state, n FROM tallies WHERE n != 0").fetchall()
    return set(stored)


def _recounted(t: JobTable) -> set:
    return {r[:5] for r in t._conn.execute(TALLY_COUNT)}


def test_tallies_follow_every_kind_of_write(tmp_path):
    odd = [{"v": 1}, {"v": 1.0}, {"v": True}, {"v": "1"}, {"v": None}, {"v": [1, {"a": "x y"}]},
           {"v": {"b": 2.5}}, {"big": 2 ** 70}, {"v": 'quo"te \u00e9'}, {"v": 1e-7}, {}]
    jobs = _grid() + [JobSpec(f"odd{i}", "rl", "true", p) for i, p in enumerate(odd)]
    exp = _sweep(tmp_path, jobs, axes=("algorithm", "seed", "v"))
    with JobTable.open(exp) as t:
        assert _stored_tallies(t) == _recounted(t)
        t.claim("w", 2, 60)  # n-NEAR, n-AMP
        t.mark_failed("n-NEAR", "crashed", owner="w")  # blocks the NEAR rl jobs
        t.mark_done("n-AMP", owner="w")
        t.transition_many([Change("odd0", RUNNING), Change("odd5", RUNNING), Change("odd7", FAILED)])
        t.prune(["odd5"], "search stopped it")
        t.cancel(["odd8"])
        t.requeue_stale(now=1e12)
        assert _stored_tallies(t) == _recounted(t)
        t.reset([FAILED])  # unblocks
        t.add(_grid(5))  # two more seeds: only the new jobs are counted
        assert _stored_tallies(t) == _recounted(t)
        assert t.by_axis() == _python_counts(t)
        assert t.by_axis()["v"]["1"] == {"running": 1, "pending": 1}  # 1 and "1" are both shown as 1
        assert list(t.by_axis()["algorithm"]) == ["NEAR", "AMP"]  # in the order of the sweep
        assert t.counts()[PENDING] == sum(r.get(PENDING, 0) for r in t.by_axis()["stage"].values())


def test_status_counts_from_the_jobs_when_something_else_edited_them(tmp_path):
    exp = _sweep(tmp_path, _grid())
    db = exp / "jobs.db"
    conn = sqlite3.connect(db)
    conn.execute("""UPDATE jobs SET params='{"algorithm": "PPO", "seed": 9}' WHERE job_id='r-AMP-0'""")
    conn.execute("INSERT INTO jobs(job_id, sweep, stage, command_template, params, resources, state, created, "
                 "updated) SELECT 'x', sweep, stage, command_template, params, resources, 'done', created, "
                 "updated FROM jobs WHERE job_id='r-AMP-1'")
    conn.commit()
    conn.close()
    st = json.loads(near("sweep", "status", exp, "--json", cwd=tmp_path).stdout)
    assert st["by_axis"]["algorithm"] == {"NEAR": {"pending": 4}, "AMP": {"pending": 3, "done": 1},
                                          "PPO": {"pending": 1}}
    assert st["by_axis"]["seed"]["9"] == {"pending": 1} and st["total"] == 9
    with JobTable.open(exp) as t:  # a writer counts them again
        assert "tallies" not in t.meta() and _stored_tallies(t) == _recounted(t)


def test_a_writer_recounts_tallies_that_jobs_inserted_outside_near_left_behind(tmp_path):
    """An INSERT outside ``add`` fires no trigger and marks nothing stale: readers see the totals
    disagree and count from the jobs (slow on big tables), so the next writer recounts once."""
    exp = _sweep(tmp_path, _grid())
    conn = sqlite3.connect(exp / "jobs.db")
    conn.execute("INSERT INTO jobs(job_id, sweep, stage, command_template, params, resources, state, created, "
                 "updated) SELECT 'x', sweep, stage, command_template, params, resources, 'done', created, "
                 "updated FROM jobs WHERE job_id='r-AMP-1'")
    conn.commit()
    conn.close()
    with JobTable.open(exp, readonly=True) as t:
        assert "tallies" not in t.meta() and _stored_tallies(t) != _recounted(t)  # stale, unmarked
        assert t.by_axis() == _python_counts(t)  # the reader is right regardless
    with JobTable.open(exp) as t:
        assert _stored_tallies(t) == _recounted(t)
        assert t.by_axis()["algorithm"]["AMP"] == {"pending": 4, "done": 1}


# --------------------------------------------------------------------------- read-only
def _write_bits(box: Path, on: bool) -> None:
    for p in [box] + list(box.rglob("*")):
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        p.chmod(p.stat().st_mode | stat.S_IWUSR if on else p.stat().st_mode & ~bits)


@pytest.fixture
def readonly_dir(tmp_path):
    """(folder to fill, function that makes it read-only): a tmpfs remounted read-only as root
    (root writes through `chmod a-w`), else a folder made read-only with chmod."""
    box, root = tmp_path / "ro", os.geteuid() == 0
    with tmpfs(box, "8M") if root else nullcontext(box):
        box.mkdir(exist_ok=True)

        def freeze() -> None:
            _write_bits(box, on=False)
            if root:
                subprocess.run(["mount", "-o", "remount,ro", str(box)], check=True)

        yield box, freeze
        if not root:
            _write_bits(box, on=True)


@pytest.mark.parametrize("version", [SCHEMA_VERSION, 2])
def test_status_show_export_on_a_read_only_table(tmp_path, readonly_dir, version):
    box, freeze = readonly_dir
    exp = _sweep(box, _grid())
    with JobTable.open(exp) as t:
        t.claim("w", 1, None)
        t.mark_failed("n-NEAR", "crashed (exit code 1)", exit_code=1)
    if version == 2:  # as the near before tallies wrote it: read as it is, never migrated
        conn = sqlite3.connect(exp / "jobs.db")
        conn.executescript("DROP TABLE tallies; DROP INDEX jobs_attention; DROP TRIGGER jobs_tally_state; "
                           "DROP TRIGGER jobs_tally_stale; DROP TRIGGER jobs_tally_delete; "
                           "UPDATE meta SET value='2' WHERE key='schema_version';")
        conn.close()
    freeze()
    before = {p.name: p.read_bytes() for p in exp.iterdir()}
    with pytest.raises(OSError):
        (exp / "probe").write_text("")

    st = near("sweep", "status", exp, "--json", cwd=tmp_path)
    assert st.returncode == 0, st.stderr
    data = json.loads(st.stdout)
    assert (data["counts"]["failed"], data["counts"]["blocked"], data["total"]) == (1, 3, 8)
    assert data["by_axis"]["algorithm"] == {"NEAR": {"failed": 1, "blocked": 3}, "AMP": {"pending": 4}}
    text = near("sweep", "status", exp, cwd=tmp_path)
    assert text.returncode == 0 and "n-NEAR ncsn  failed" in text.stdout, text.stderr
    show = near("sweep", "show", exp, "r-NEAR-1", cwd=tmp_path)
    assert show.returncode == 0 and "dependency n-NEAR failed" in show.stdout, show.stderr
    out = tmp_path / "jobs.csv"
    r = near("sweep", "export", exp, "--out", out, cwd=tmp_path)
    assert r.returncode == 0 and len(out.read_text().splitlines()) == 9, r.stderr
    # the default output lies in the read-only folder: said so, no traceback
    _refused(near("sweep", "export", exp, cwd=tmp_path), str(exp / "jobs.csv"), "--out")
    # a writing command says the table is read-only
    _refused(near("sweep", "reset", exp, cwd=tmp_path), str(exp / "jobs.db"), "read-only")
    assert {p.name: p.read_bytes() for p in exp.iterdir()} == before  # nothing written, not even -shm


# --------------------------------------------------------------------------- broken input
def _page_of(db: Path, table: str) -> tuple[int, int]:
    conn = sqlite3.connect(db)
    page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return page, size


def test_malformed_page_on_show_and_status(tmp_path):
    exp = _sweep(tmp_path, _grid())
    with JobTable.open(exp) as t:
        t.claim("w", 1, None)
        t.mark_failed("n-NEAR", "crashed", exit_code=1)
    db = exp / "jobs.db"
    page, size = _page_of(db, "jobs")  # a handful of jobs: the root page holds every row
    with open(db, "r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xff" * 64)  # no valid b-tree page type, cell count or offsets
    before = db.read_bytes()
    _refused(near("sweep", "show", exp, "r-AMP-1", cwd=tmp_path), str(db), "job r-AMP-1", "malformed")
    _refused(near("sweep", "status", exp, cwd=tmp_path), str(db), "malformed")
    _refused(near("sweep", "export", exp, "--out", tmp_path / "x.csv", cwd=tmp_path), str(db), "malformed")
    assert db.read_bytes() == before


def test_unknown_state_in_a_row(tmp_path):
    exp = _sweep(tmp_path, _grid())
    conn = sqlite3.connect(exp / "jobs.db")
    conn.execute("UPDATE jobs SET state='zombie' WHERE job_id='r-AMP-2'")
    conn.commit()
    conn.close()
    db = str(exp / "jobs.db")
    for cmd in (("status",), ("status", "--json"), ("show", "r-AMP-2"), ("export", "--out", tmp_path / "x.csv")):
        _refused(near("sweep", cmd[0], exp, *cmd[1:], cwd=tmp_path), db, "job r-AMP-2", "'zombie'")
    # a job beside it still shows
    assert near("sweep", "show", exp, "r-AMP-1", cwd=tmp_path).returncode == 0


def test_status_into_a_closed_pipe_exits_quietly(tmp_path):
    exp = _sweep(tmp_path, _grid(4000))  # ~8000 lines: more than a pipe holds
    p = subprocess.Popen([sys.executable, "-m", "near", "sweep", "status", str(exp)], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.readline()
    p.stdout.close()  # as `| head -1` does
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and err == "", err  # 128 + SIGPIPE, as a tool killed by it
    assert first.startswith(b"t: 8002 jobs")
