"""The retry policy, outcome files and the SLURM reconcile as pure functions: no cluster needed.

The table-facing parts run against real SQLite files; reconcile gets a hand-built scheduler view
(what squeue/sacct would have said) and real outcome files read back from disk.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from near.errors import TableError
from near.executors.base import decide, fold, record_outcome
from near.executors.outcomes import (
    CANCELLED, FINISHED, LOST, REQUEUED, STARTED, STOPPED, Outcome, checkpoint_progress, read_outcomes, reserve,
    write_outcome,
)
from near.executors.slurm import SchedulerView, parse_sacct, reconcile
from near.jobtable import TRANSITIONS, JobSpec, JobTable, legal


def _table(tmp_path, n: int = 1, max_attempts: int = 3, **kw) -> JobTable:
    t = JobTable.create(tmp_path / "exp")
    t.add([JobSpec(f"j{i}", "rl", "true", max_attempts=max_attempts, **kw) for i in range(n)])
    return t


def _queued(t: JobTable, job_id: str = "j0", sid: str = "7_0"):
    t.claim("submit", limit=100, lease_s=None, to_state="queued", job_ids=[job_id])
    t.set_scheduler_id(job_id, sid)
    return t.get(job_id)


def test_transition_table_is_declarative_and_enforced(tmp_path):
    assert legal("pending", "done") and legal("running", "pruned") and legal("queued", "pruned")
    assert not legal("done", "running") and not legal("pending", "pruned") and not legal(None, "done")
    assert all(legal(s, "pending") for s in ("done", "failed", "cancelled", "pruned"))  # resets
    assert set(TRANSITIONS) >= {None, "pending", "queued", "running", "done", "failed", "blocked", "cancelled",
                                "pruned"}
    t = _table(tmp_path)
    with pytest.raises(TableError, match="illegal transition pending -> pruned"):
        t.transition("j0", "pruned")
    # an import: pending -> done, with a reason
    with pytest.raises(TableError, match="needs a reason"):
        t.transition("j0", "done")
    assert t.transition("j0", "done", reason="imported from /runs/x")
    with pytest.raises(TableError, match="illegal transition done -> running"):
        t.transition("j0", "running")
    assert t.get("j0").state == "done"


def test_prune_is_terminal_and_blocks_dependents(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    t.add([JobSpec("a", "ncsn", "true"), JobSpec("b", "rl", "true", deps={"up": "a"})])
    t.claim("w", limit=1)
    assert t.prune(["a", "b"], "pruned at step 40 (value 0.1 < median 0.3)") == 1
    assert (t.get("a").state, t.get("b").state) == ("pruned", "blocked")
    assert "step 40" in t.get("a").reason


def test_exit_codes_mean_the_same_on_every_backend(tmp_path):
    t = _table(tmp_path, n=4)
    t.claim("w", limit=4)
    jobs = {j.job_id: j for j in t.jobs()}
    assert decide(jobs["j0"], Outcome("j0", FINISHED, 0)).to_state == "done"
    bad = decide(jobs["j1"], Outcome("j1", FINISHED, 2))
    assert (bad.to_state, bad.charged) == ("failed", 0) and "not retried" in bad.reason
    resumable = decide(jobs["j2"], Outcome("j2", FINISHED, 3))
    assert (resumable.to_state, resumable.requeues, resumable.charged) == ("pending", 1, 0)
    crash = decide(jobs["j3"], Outcome("j3", FINISHED, 1))
    assert (crash.to_state, crash.crashes, crash.charged) == ("pending", 1, 1)
    assert crash.reason == "crashed (exit code 1); will be resubmitted (1/3)"
    assert decide(jobs["j3"], Outcome("j3", FINISHED, 137)).reason.startswith("crashed (killed by SIGKILL)")


def test_crashes_fail_after_max_attempts_unless_the_checkpoint_advanced(tmp_path):
    t = _table(tmp_path, max_attempts=2)
    states = []
    for progress in ("ckpt:sha1:a", "ckpt:sha1:b", "ckpt:sha1:b", "ckpt:sha1:b"):
        job = t.claim("w", limit=1)[0]
        states.append(record_outcome(t, job, Outcome("j0", FINISHED, 1, progress=progress), owner="w"))
    # a, then b: progress each time (not charged); b again: charged (1/2), b again: failed (2/2)
    assert states == ["pending", "pending", "pending", "failed"]
    j = t.get("j0")
    assert (j.attempts, j.crashes, j.charged, j.progress) == (4, 4, 2, "ckpt:sha1:b")
    assert "lost 2 of max_attempts 2" in j.reason


def test_folding_an_outcome_file_twice_changes_nothing(tmp_path):
    t = _table(tmp_path)
    job = _queued(t)
    run = tmp_path / "exp" / "runs" / "j0"
    write_outcome(run, Outcome("j0", STARTED, scheduler_id="7_0"))
    write_outcome(run, Outcome("j0", FINISHED, 0, scheduler_id="7_0"))
    outs = read_outcomes(run, "j0")
    assert [o.kind for o in outs] == [STARTED, FINISHED] and all(o.host for o in outs)
    changes, after = fold(job, outs)
    assert after.state == "done"
    assert t.transition_many(changes) == [True, True]
    assert t.folded(["j0"]) == {"j0": {o.name for o in outs}}
    t.reset(["done"])
    _queued(t)
    # the same files again (e.g. a second sync racing the first): skipped by name
    assert t.transition_many(fold(t.get("j0"), outs)[0]) == [False, False]
    assert t.get("j0").state == "queued"
    assert read_outcomes(run, "j0", skip=t.folded(["j0"])["j0"]) == []


def test_outcome_of_a_stale_attempt_is_ignored(tmp_path):
    t = _table(tmp_path)
    job = _queued(t, sid="9_0")  # resubmitted: the table now knows it as 9_0
    assert decide(job, Outcome("j0", FINISHED, 0, scheduler_id="7_0")) is None
    changes, after = fold(job, [Outcome("j0", FINISHED, 0, scheduler_id="7_0", name="x.json")])
    assert after.state == "queued" and changes[0].to_state is None and changes[0].outcome == "x.json"


def test_outcome_files_are_whole_and_reserved_space_survives(tmp_path):
    run = tmp_path / "run"
    spot = reserve(run)
    assert spot.stat().st_size == 4096
    path = write_outcome(run, Outcome("j", FINISHED, 3, progress="p"), spot)
    assert not spot.exists() and path.name.endswith("-finished-" + path.name.split("-")[-1])
    (run / "outcomes" / ".tmp-half").write_text('{"kind": "fin')  # a writer that died mid-write
    assert [(o.kind, o.exit_code, o.progress) for o in read_outcomes(run, "j")] == [(FINISHED, 3, "p")]


def test_checkpoint_progress_follows_the_declared_checkpoint_only(tmp_path):
    pattern = "nn/checkpoint.pth"
    assert checkpoint_progress(tmp_path, pattern) is None
    (tmp_path / "nn").mkdir()
    (tmp_path / "nn" / "checkpoint.pth").write_bytes(b"epoch 1")
    first = checkpoint_progress(tmp_path, pattern)
    (tmp_path / "nn" / "checkpoint.pth").write_bytes(b"epoch 1")  # rewritten, same content
    assert checkpoint_progress(tmp_path, pattern) == first
    (tmp_path / "nn" / "checkpoint.pth").write_bytes(b"epoch 2")
    assert checkpoint_progress(tmp_path, pattern) != first and first.startswith("nn/checkpoint.pth:")
    # a file merely named like a checkpoint is no progress unless the job declared it
    (tmp_path / "ckpt.txt").write_text("1")
    assert checkpoint_progress(tmp_path, None) is None
    assert checkpoint_progress(tmp_path, "ckpt*").startswith("ckpt.txt:")


def test_near_train_commands_declare_the_trainers_checkpoint():
    from near.executors.runner import declared_checkpoint

    assert declared_checkpoint("near train rl task=maze run_dir=x", {}) == "nn/checkpoint.pth"
    assert declared_checkpoint("/venv/bin/near train ncsn", {}) == "nn/checkpoint.pth"
    assert declared_checkpoint("python job.py", {}) is None
    assert declared_checkpoint("python job.py", {"checkpoint": "state/*.pt"}) == "state/*.pt"


def test_uncharged_attempts_are_capped_by_max_requeues(tmp_path):
    t = JobTable.create(tmp_path / "exp")
    t.add([JobSpec("j0", "rl", "true", resources={"max_requeues": 3})])
    states = []
    for k in range(4):  # progress every time, or an interruption: never charged, but capped
        job = t.claim("w", limit=1)[0]
        o = Outcome("j0", FINISHED, 1, progress=f"c:{k}") if k % 2 else Outcome("j0", FINISHED, 3)
        states.append(record_outcome(t, job, o, owner="w"))
    assert states == ["pending", "pending", "pending", "failed"]
    j = t.get("j0")
    assert j.charged == 0 and "gave up after 3 uncharged attempts (max_requeues 3)" in j.reason


def test_reconcile_prefers_outcome_files_and_falls_back_on_the_scheduler(tmp_path):
    t = _table(tmp_path, n=6)
    for i in range(6):
        _queued(t, f"j{i}", f"7_{i}")
    runs = tmp_path / "exp" / "runs"
    # j0: finished (sacct says COMPLETED too); j1: requeued then started again (the old race: squeue
    # RUNNING while the table said queued); j2: node died (sacct NODE_FAIL, no file); j3: scancelled
    # after a checkpoint; j4: squeue PENDING while the table says running and no file (killed
    # before it wrote); j5: COMPLETED in sacct but its file was never written
    write_outcome(runs / "j0", Outcome("j0", STARTED, scheduler_id="7_0"))
    write_outcome(runs / "j0", Outcome("j0", FINISHED, 0, scheduler_id="7_0"))
    write_outcome(runs / "j1", Outcome("j1", STARTED, scheduler_id="7_1"))
    write_outcome(runs / "j1", Outcome("j1", REQUEUED, 3, scheduler_id="7_1", progress="c1"))
    write_outcome(runs / "j1", Outcome("j1", STARTED, scheduler_id="7_1"))
    write_outcome(runs / "j3", Outcome("j3", STARTED, scheduler_id="7_3"))
    write_outcome(runs / "j3", Outcome("j3", REQUEUED, 3, scheduler_id="7_3"))
    t.transition("j4", "running", expect=("queued",))
    view = SchedulerView(
        live={"7_1": ("RUNNING", ""), "7_4": ("PENDING", "BeginTime")},
        accounted={"7_0": ("COMPLETED", "0:0", ""), "7_2": ("NODE_FAIL", "0:0", ""),
                   "7_3": ("CANCELLED", "0:15", ""), "7_5": ("COMPLETED", "0:0", "")},
    )
    active = t.jobs(states=["queued", "running"])
    found = {j.job_id: read_outcomes(j.run_dir, j.job_id) for j in active}
    plan = reconcile(active, view, found)
    assert plan.scancel == []
    t.transition_many(plan.changes)
    got = {j.job_id: j for j in t.jobs()}
    assert got["j0"].state == "done"
    assert (got["j1"].state, got["j1"].attempts, got["j1"].requeues) == ("running", 2, 1)
    assert got["j2"].state == "pending" and "NODE_FAIL" in got["j2"].reason and got["j2"].charged == 1
    assert got["j3"].state == "cancelled" and "slurm 7_3" in got["j3"].reason
    assert (got["j4"].state, got["j4"].attempts) == ("queued", 2) and "requeued (sync)" in got["j4"].reason
    assert got["j5"].state == "pending" and "without recording a result" in got["j5"].reason
    # a second reconcile over the same files and view changes nothing more
    active = t.jobs(states=["queued", "running"])
    folded = t.folded([j.job_id for j in active])
    again = reconcile(active, view, {j.job_id: read_outcomes(j.run_dir, j.job_id, folded.get(j.job_id, set()))
                                     for j in active})
    assert not any(t.transition_many(again.changes) if again.changes else [])


def test_stopped_attempt_is_refunded(tmp_path):
    t = _table(tmp_path)
    job = t.claim("w", limit=1)[0]
    assert record_outcome(t, job, Outcome("j0", STOPPED, 3, reason="interrupted by SIGINT"), owner="w") == "pending"
    assert (t.get("j0").attempts, t.get("j0").charged) == (0, 0)
    job = t.claim("w", limit=1)[0]
    assert record_outcome(t, job, Outcome("j0", CANCELLED), owner="other") is None  # not the lease holder
    assert record_outcome(t, job, Outcome("j0", LOST, reason="lease expired"), owner="w") == "pending"


def test_node_side_imports_no_job_table_code():
    code = ("import sys, near.executors.slurm_node; "
            "print(sorted(m for m in sys.modules if m.startswith('near.jobtable') or m == 'sqlite3'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_local_controller_hook_adds_and_prunes_jobs_each_cycle(tmp_path):
    from near.executors.local import run_local

    t = JobTable.create(tmp_path / "exp")
    t.add([JobSpec("slow", "rl", "sleep 30"), JobSpec("first", "rl", "true")])
    calls = []

    def hook(table: JobTable, prune) -> None:
        calls.append(table.counts())
        if len(calls) == 1:
            table.add([JobSpec("added", "rl", "true")])  # dispatched in this same cycle or the next
        if table.get("slow").state == "running" and table.get("added").state == "done":
            prune(["slow"], "pruned at step 3 (value 0.1)")

    res = run_local(t, 2, [hook], log=lambda m: None, grace_s=1.0, install_signals=False)
    states = {j.job_id: j.state for j in t.jobs()}
    assert states == {"slow": "pruned", "first": "done", "added": "done"}, res
    assert len(calls) >= 2 and "step 3" in t.get("slow").reason


def test_a_cycle_decides_by_the_files_first_then_by_the_exit_status(tmp_path):
    """The controller's decision for local attempts, without running anything: a supervisor killed
    after writing its outcome (exit 143) is still done; an attempt the controller stopped and that
    wrote 3 is read as stopped (refunded); one that wrote nothing falls back on its exit status."""
    from near.executors.base import View
    from near.executors.controller import judge
    from near.executors.local import LocalBackend

    t = _table(tmp_path, n=3)
    jobs = t.claim("w", limit=3)
    view = View(jobs=jobs, state={"exited": {j.job_id: 143 for j in jobs}, "launch": {j.job_id: "L" for j in jobs},
                                  "lost": {}},
                readings={"j1": ("L", STOPPED, "interrupted by SIGINT")}, owner_checked=True)
    found = {"j0": [Outcome("j0", FINISHED, 0, scheduler_id="L", name="a.json")],
             "j1": [Outcome("j1", FINISHED, 3, scheduler_id="L", name="b.json")]}
    plan = judge(jobs, found, LocalBackend(t), view)
    assert all(ch.owner == "w" for ch in plan.changes)
    t.transition_many(plan.changes)
    j0, j1, j2 = (t.get(f"j{i}") for i in range(3))
    assert j0.state == "done"
    assert (j1.state, j1.attempts, j1.charged, j1.reason) == ("pending", 0, 0, "interrupted by SIGINT")
    assert (j2.state, j2.charged, j2.exit_code) == ("pending", 1, 143) and "SIGTERM" in j2.reason


def test_sacct_lines_cover_the_tasks_of_an_array_listed_bare_or_as_a_range():
    """Right after an array is cancelled, slurmdbd may list it bare (``8``) before it records the
    range; those tasks are as cancelled as the ones of ``7_[0-2%8]``, unless they have a line."""
    out = "\n".join(["7_[0-2%8]|CANCELLED by 0|0:0|JobHeldUser",
                     "8|CANCELLED by 0|0:0|None",
                     "8_1|COMPLETED|0:0|None",
                     "9|FAILED|1:0|None",
                     "garbage"])
    got = parse_sacct(out, ["7_0", "7_2", "8_0", "8_1", "8_2", "9", "10_0"])
    assert {sid: rec[0] for sid, rec in got.items()} == {
        "7_0": "CANCELLED", "7_1": "CANCELLED", "7_2": "CANCELLED", "8": "CANCELLED", "8_0": "CANCELLED",
        "8_1": "COMPLETED", "8_2": "CANCELLED", "9": "FAILED"}
    assert got["9"] == ("FAILED", "1:0", "None") and got["7_1"][2] == "JobHeldUser"
