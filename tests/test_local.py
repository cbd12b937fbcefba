"""The local executor end to end: real `near sweep` processes, real job processes, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from near.jobtable import JobTable

REPO = Path(__file__).resolve().parents[1]
JOB = f"{sys.executable} {REPO / 'tests' / '_count_job.py'}"


def near(*args: str, cwd: Path, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "near", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"near {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "near", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def write_spec(tmp: Path, body: str, name: str = "t") -> Path:
    (tmp / "sweeps").mkdir(exist_ok=True)
    spec = tmp / "sweeps" / f"{name}.yaml"
    # the test jobs checkpoint into ckpt.txt, and declare it
    spec.write_text(f"name: {name}\nworkdir: ..\nresources: {{checkpoint: ckpt.txt}}\n" + body)
    return spec


def wait_for(cond, timeout: float = 20.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ckpt(run_dir: str) -> int:
    f = Path(run_dir) / "ckpt.txt"
    try:
        return int(f.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def log_lines(tmp: Path) -> list[str]:
    f = tmp / "log.txt"
    return f.read_text().splitlines() if f.exists() else []


def test_run_respects_dependencies_shares_ncsn_and_writes_logs(tmp_path):
    write_spec(tmp_path, f"""
axes:
  seed: [1, 2]
  ablation: [a, b]
stages:
  - name: ncsn
    command: {JOB} --run-dir ${{run_dir}} --n 3 --log {tmp_path}/log.txt seed=${{seed}}
  - name: rl
    needs: [ncsn]
    command: {JOB} --run-dir ${{run_dir}} --needs ${{ncsn.run_dir}} --n 2 --log {tmp_path}/log.txt ${{ablation}}
""")
    out = near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path).stdout
    assert "6 new, 0 existing, 2 shared" in out
    r = near("sweep", "run", "experiments/t", "--workers", "2", cwd=tmp_path)
    assert "done" in r.stdout
    t = JobTable.open(tmp_path / "experiments" / "t")
    assert t.counts()["done"] == 6
    jobs = {j.job_id: j for j in t.jobs()}
    starts = [Path(line.split()[0]).name for line in log_lines(tmp_path)]
    assert sorted(starts) == sorted(jobs)  # each job ran exactly once
    for j in jobs.values():
        run = Path(j.run_dir)
        assert (run / "done.txt").exists() and (run / "command.sh").exists()
        assert "step 1" in (run / "stdout.log").read_text()
        for dep in j.deps.values():  # dependencies started (and finished) first
            assert starts.index(dep) < starts.index(j.job_id)
    # re-adding changes nothing; the CLI views work
    assert "0 new, 6 existing" in near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path).stdout
    st = json.loads(near("sweep", "status", "experiments/t", "--json", cwd=tmp_path).stdout)
    assert st["counts"]["done"] == 6 and st["by_axis"]["ablation"] == {"a": {"done": 2}, "b": {"done": 2}}
    rl = next(j for j in jobs.values() if j.stage == "rl")
    show = near("sweep", "show", "experiments/t", rl.job_id[:6], cwd=tmp_path).stdout
    assert rl.command in show and rl.run_dir in show and "running -> done" in show
    near("sweep", "export", "experiments/t", "--format", "parquet", cwd=tmp_path)
    assert (tmp_path / "experiments" / "t" / "jobs.parquet").exists()


def test_failed_ncsn_blocks_dependents_and_reset_unblocks(tmp_path):
    fixed = tmp_path / "fixed"
    write_spec(tmp_path, f"""
axes:
  ablation: [a, b]
stages:
  - name: ncsn
    command: {JOB} --run-dir ${{run_dir}} --n 1 --fail-unless {fixed}
  - name: rl
    needs: [ncsn]
    command: {JOB} --run-dir ${{run_dir}} --needs ${{ncsn.run_dir}} --n 1 ${{ablation}}
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    r = near("sweep", "run", "experiments/t", cwd=tmp_path, check=False)
    assert r.returncode == 1
    st = json.loads(near("sweep", "status", "experiments/t", "--json", cwd=tmp_path).stdout)
    assert (st["counts"]["failed"], st["counts"]["blocked"]) == (1, 2)
    failed = next(j for j in st["jobs"] if j["state"] == "failed")
    # a crash is retried up to max_attempts (3 by default), as on SLURM
    assert failed["reason"] == "crashed (exit code 1) (lost 3 of max_attempts 3)" and failed["exit_code"] == 1
    assert failed["attempts"] == 3
    assert all(failed["job_id"] in j["reason"] for j in st["jobs"] if j["state"] == "blocked")
    fixed.write_text("")
    assert "3 job(s)" in near("sweep", "reset", "experiments/t", "--state", "failed", cwd=tmp_path).stdout
    near("sweep", "run", "experiments/t", cwd=tmp_path)
    assert JobTable.open(tmp_path / "experiments" / "t").counts()["done"] == 3


def test_sigint_stops_jobs_gracefully_and_run_again_resumes(tmp_path):
    write_spec(tmp_path, f"""
stages:
  - name: rl
    command: {JOB} --run-dir ${{run_dir}} --n 150 --sleep 0.02 --stop-delay 0.5 --log {tmp_path}/log.txt
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    table = JobTable.open(tmp_path / "experiments" / "t")
    job = table.jobs()[0]
    p = start("sweep", "run", "experiments/t", cwd=tmp_path)
    wait_for(lambda: ckpt(job.run_dir) >= 5, what="job progress")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, out + err
    j = table.get(job.job_id)
    assert (j.state, j.attempts) == ("pending", 0)
    assert "SIGINT" in j.reason and j.lease_owner is None
    stopped_at = ckpt(job.run_dir)
    assert 5 <= stopped_at < 150
    # the job got SIGTERM and finished its graceful stop (not SIGKILLed while bash had already quit)
    assert "interrupted at" in (Path(job.run_dir) / "stdout.log").read_text()
    assert j.exit_code == 3
    near("sweep", "run", "experiments/t", cwd=tmp_path)
    j = table.get(job.job_id)
    assert (j.state, j.attempts) == ("done", 1)
    assert log_lines(tmp_path)[-1].endswith(f"start {stopped_at}")  # resumed from its checkpoint


def _one_slow_job(tmp_path, sleep: float):
    """A sweep of one checkpointing job of 120 steps (``sleep`` s each), added; its table and job."""
    write_spec(tmp_path, f"""
stages:
  - name: rl
    command: {JOB} --run-dir ${{run_dir}} --n 120 --sleep {sleep} --log {tmp_path}/log.txt
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    table = JobTable.open(tmp_path / "experiments" / "t")
    return table, table.jobs()[0]


def test_sigkilled_controller_leaves_no_orphan_and_job_is_requeued_after_lease(tmp_path):
    table, job = _one_slow_job(tmp_path, sleep=0.02)
    p = start("sweep", "run", "experiments/t", "--lease", "1.5", cwd=tmp_path)
    wait_for(lambda: ckpt(job.run_dir) >= 5, what="job progress")
    p.kill()
    p.wait()
    time.sleep(0.5)
    k = ckpt(job.run_dir)
    time.sleep(0.5)
    assert ckpt(job.run_dir) == k, "the job kept running after its controller was SIGKILLed"
    assert table.get(job.job_id).state == "running"  # nobody recorded anything yet
    # the job's supervisor wrote how the attempt ended (checkpointed on SIGTERM, exit 3): the next
    # run folds that outcome file at once instead of waiting for the lease to expire
    r = near("sweep", "run", "experiments/t", "--lease", "1.5", cwd=tmp_path)
    assert f"pending  {job.job_id}" in r.stdout.splitlines()[1]  # folded at once, no lease wait
    j = table.get(job.job_id)
    assert (j.state, j.attempts, j.requeues, j.charged) == ("done", 2, 1, 0)
    # read as interrupted from the supervisor's file: the job's own exit 3 (the controller's death
    # is one stop, however many of its threads hand the supervisor on as they die)
    why = [e.reason or "" for e in table.history(job.job_id) if e.to_state == "pending"]
    assert len(why) == 1 and why[0].startswith("interrupted (exit 3"), why
    assert log_lines(tmp_path)[-1].endswith(f"start {k}")


def test_killed_jobs_retry_while_their_checkpoint_advances(tmp_path):
    write_spec(tmp_path, f"""
axes:
  tries: [1, 2]
stages:
  - name: rl
    when: {{tries: 1}}
    command: {JOB} --run-dir ${{run_dir}} --n 4 --crash-at 2 t${{tries}}
    max_attempts: 1
  - name: rl
    when: {{tries: 2}}
    command: {JOB} --run-dir ${{run_dir}} --n 4 --crash-at 2 t${{tries}}
    max_attempts: 2
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    table = JobTable.open(tmp_path / "experiments" / "t")
    one, two = table.jobs()
    near("sweep", "run", "experiments/t", cwd=tmp_path)
    a, b = table.get(one.job_id), table.get(two.job_id)
    # killed at step 2 after checkpointing steps 1-2: progress, so not charged even with max_attempts 1
    for j in (a, b):
        assert (j.state, j.attempts, j.crashes, j.charged) == ("done", 2, 1, 0)
        assert "resumed from 2" in (Path(j.run_dir) / "stdout.log").read_text()
    why = [e.reason for e in table.history(one.job_id) if e.to_state == "pending" and e.reason]
    assert why == ["crashed (killed by SIGKILL); will be resubmitted (0/1); checkpoint advanced, not charged"]


def test_time_limit_stops_the_job_and_only_progress_earns_another_attempt(tmp_path):
    write_spec(tmp_path, f"""
max_attempts: 1
axes:
  kind: [ckpt, stuck]
stages:
  - name: rl
    when: {{kind: ckpt}}
    command: {JOB} --run-dir ${{run_dir}} --n 150 --sleep 0.02
    resources: {{time: "0:02"}}
  - name: rl
    when: {{kind: stuck}}
    command: sleep 30 && echo ${{kind}}
    resources: {{time: "0:02"}}
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    near("sweep", "run", "experiments/t", "--workers", "2", cwd=tmp_path, check=False)
    ckpt_job, stuck = JobTable.open(tmp_path / "experiments" / "t").jobs()
    # 3 s of work under a 2 s limit: stopped, checkpointed, resumed; the stopped attempts advanced
    assert ckpt_job.state == "done" and ckpt_job.attempts >= 2 and ckpt_job.charged == 0, ckpt_job.reason
    assert ckpt(ckpt_job.run_dir) == 150
    # no checkpoint at all: the time-out is charged and max_attempts 1 ends it
    assert stuck.state == "failed" and "timeout" in stuck.reason and stuck.attempts == 1


def test_concurrent_controllers_never_run_a_job_twice(tmp_path):
    write_spec(tmp_path, f"""
axes:
  i: {{count: 16}}
stages:
  - name: rl
    command: {JOB} --run-dir ${{run_dir}} --n 3 --sleep 0.1 --log {tmp_path}/log.txt j${{i}}
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    procs = [start("sweep", "run", "experiments/t", "--workers", "2", cwd=tmp_path) for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, out + err
    runs = [line.split()[0] for line in log_lines(tmp_path)]
    assert len(runs) == 16 and len(set(runs)) == 16
    table = JobTable.open(tmp_path / "experiments" / "t")
    assert table.counts()["done"] == 16
    owners = {e.detail for j in table.jobs() for e in table.history(j.job_id) if e.to_state == "running"}
    assert len(owners) >= 2  # the work really was shared


def test_show_reports_missing_table_and_ambiguous_prefix(tmp_path):
    r = near("sweep", "status", "experiments/nope", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "experiments/nope: no job table" in r.stderr
    write_spec(tmp_path, f"""
axes:
  i: {{count: 40}}
stages:
  - name: rl
    command: {JOB} --run-dir ${{run_dir}} j${{i}}
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    ids = [j.job_id for j in JobTable.open(tmp_path / "experiments" / "t").jobs()]
    first = {i[0] for i in ids}
    prefix = next(c for c in sorted(first) if sum(i.startswith(c) for i in ids) > 1)
    r = near("sweep", "show", "experiments/t", prefix, cwd=tmp_path, check=False)
    assert r.returncode == 2 and "ambiguous" in r.stderr
    assert os.path.basename(ids[0]) in near("sweep", "show", "t", ids[0], cwd=tmp_path).stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_sigterm_behaves_like_ctrl_c(tmp_path, sig):
    write_spec(tmp_path, f"""
axes:
  i: [1, 2]
stages:
  - name: rl
    command: {JOB} --run-dir ${{run_dir}} --n 200 --sleep 0.02 j${{i}}
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    table = JobTable.open(tmp_path / "experiments" / "t")
    p = start("sweep", "run", "experiments/t", "--workers", "2", cwd=tmp_path)
    wait_for(lambda: all(ckpt(j.run_dir) >= 3 for j in table.jobs()), what="both jobs running")
    p.send_signal(sig)
    p.communicate(timeout=30)
    assert p.returncode == 130
    assert [(j.state, j.attempts) for j in table.jobs()] == [("pending", 0), ("pending", 0)]


def test_stalled_controller_job_is_not_run_again_while_its_attempt_lives(tmp_path):
    table, job = _one_slow_job(tmp_path, sleep=0.03)
    a = start("sweep", "run", "experiments/t", "--lease", "1", cwd=tmp_path)
    wait_for(lambda: ckpt(job.run_dir) >= 3, what="job progress")
    os.kill(a.pid, signal.SIGSTOP)  # controller A stalls; its job keeps running
    time.sleep(1.5)  # A's lease expires
    b = start("sweep", "run", "experiments/t", "--lease", "1", cwd=tmp_path)
    # B leaves the job alone while A's supervisor holds its run dir, then folds what it wrote
    out_b, err_b = b.communicate(timeout=60)
    assert b.returncode == 0, out_b + err_b
    j = table.get(job.job_id)
    assert (j.state, j.attempts, j.crashes) == ("done", 1, 0)
    os.kill(a.pid, signal.SIGCONT)  # A wakes up: the job is recorded already, nothing changes
    out_a, _ = a.communicate(timeout=60)
    assert a.returncode == 0, out_a
    assert table.get(job.job_id).attempts == 1
    assert log_lines(tmp_path) == [f"{job.run_dir} start 0"]  # started once, never again


def _job_pids(job_id: str) -> list[int]:
    """Processes (the supervisor, bash, its commands) running with this job's NEAR_JOB_ID."""
    out = []
    needle = f"NEAR_JOB_ID={job_id}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    out.append(int(entry))
            except OSError:
                continue
    return out


def test_sigkilled_controller_leaves_no_orphan_of_a_multi_command_job(tmp_path):
    marker = tmp_path / "end.txt"
    write_spec(tmp_path, f"""
stages:
  - name: rl
    command: echo a; sleep 2; sleep 8; echo end > {marker}
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    job = JobTable.open(tmp_path / "experiments" / "t").jobs()[0]
    p = start("sweep", "run", "experiments/t", cwd=tmp_path)
    wait_for(lambda: (Path(job.run_dir) / "stdout.log").exists()
             and "a\n" in (Path(job.run_dir) / "stdout.log").read_text(), what="the job's first command")
    assert _job_pids(job.job_id)
    p.kill()
    p.wait()
    # the supervisor gets SIGTERM (parent death), the shell stops after `sleep 2` instead of going on
    wait_for(lambda: not _job_pids(job.job_id), timeout=10, what="every process of the job gone")
    assert not marker.exists()


ESCAPE = """\
import os, subprocess, sys
run_dir, tag = sys.argv[1], sys.argv[2]
sleeper = [sys.executable, "-c", "import time; time.sleep(600)", tag]
new_session = subprocess.Popen(sleeper, start_new_session=True)      # setsid: a group of its own
if os.fork() == 0:                                                    # a daemon's double fork
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, sleeper)
    os._exit(0)
os.wait()
open(os.path.join(run_dir, "pids.txt"), "w").write(str(new_session.pid))
"""


def _tagged_pids(tag: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and tag.encode() in Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0"):
                pids.append(int(d))
        except OSError:
            continue
    return pids


def test_processes_a_job_started_outside_its_group_end_with_it(tmp_path):
    (tmp_path / "escape.py").write_text(ESCAPE)
    tag = f"near-escapee-{os.getpid()}-{tmp_path.name}"
    write_spec(tmp_path, f"""
stages:
  - name: rl
    command: {sys.executable} {tmp_path / 'escape.py'} ${{run_dir}} {tag}
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    job = JobTable.open(tmp_path / "experiments" / "t").jobs()[0]
    try:
        near("sweep", "run", "experiments/t", cwd=tmp_path)
        assert (Path(job.run_dir) / "pids.txt").exists()
        # recorded done only once nothing the attempt started is left writing into its run dir
        assert _tagged_pids(tag) == []
        assert JobTable.open(tmp_path / "experiments" / "t").get(job.job_id).state == "done"
    finally:
        for pid in _tagged_pids(tag):
            os.kill(pid, signal.SIGKILL)


SLOW_SNAPSHOT = """\
import os, sys, time
from near import cli, snapshot
take, gate = snapshot.take, sys.argv[2]

def held_up(*args, **kwargs):   # the snapshot of a large tree: no heartbeat meanwhile
    open(gate + ".waiting", "w").close()
    while not os.path.exists(gate):
        time.sleep(0.05)
    return take(*args, **kwargs)

snapshot.take = held_up
sys.exit(cli.main(["sweep", "run", sys.argv[1], "--lease", "1"]))
"""


def test_a_claim_that_lapsed_during_a_slow_snapshot_is_not_started_again(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW_SNAPSHOT)
    write_spec(tmp_path, f"""
stages:
  - name: rl
    command: echo ran >> {tmp_path / 'ran.txt'}
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    exp = tmp_path / "experiments" / "t"
    gate = tmp_path / "gate"
    slow = subprocess.Popen([sys.executable, str(tmp_path / "slow.py"), str(exp), str(gate)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: Path(str(gate) + ".waiting").exists(), what="the slow controller's claim")
        # its 1 s lease lapses: another controller takes the job over and runs it to the end
        near("sweep", "run", str(exp), cwd=tmp_path)
        with JobTable.open(exp) as t:
            job = t.jobs()[0]
        assert job.state == "done" and (tmp_path / "ran.txt").read_text() == "ran\n"
        gate.touch()
        out, _ = slow.communicate(timeout=60)
    finally:
        gate.touch()
        slow.kill()
    assert slow.returncode == 0, out
    assert "claim lapsed" in out, out
    # the slow controller started nothing: no second attempt of the done job, its record untouched
    with JobTable.open(exp) as t:
        after = t.get(job.job_id)
    assert (after.state, after.scheduler_id) == ("done", job.scheduler_id)
    assert (Path(job.run_dir) / "stdout.log").read_text().count("=== near: job") == 1
    assert (tmp_path / "ran.txt").read_text() == "ran\n"


def test_a_full_disk_at_dispatch_leaves_the_job_pending_and_it_runs_once_space_is_back(tmp_path):
    from near.executors.local import run_local
    from near.jobtable import JobSpec

    t = JobTable.create(tmp_path / "exp")
    t.add([JobSpec("j0", "rl", "true")])
    run_dir = Path(t.get("j0").run_dir)
    run_dir.mkdir(parents=True)
    log = run_dir / "stdout.log"
    log.symlink_to("/dev/full")  # every write to it fails with ENOSPC, as on a full disk
    seen = []

    def free_space_later(table: JobTable, prune) -> None:
        j = table.get("j0")
        if j.state == "pending" and j.reason and log.is_symlink():
            seen.append(j.reason)
            log.unlink()

    res = run_local(t, 1, [free_space_later], log=lambda m: None, install_signals=False)
    j = t.get("j0")
    assert res.ok and (j.state, j.attempts, j.charged) == ("done", 1, 0)
    assert "cannot start yet" in seen[0] and "No space left on device" in seen[0]


def test_a_job_rewriting_its_checkpoint_then_crashing_ends_failed_not_looping(tmp_path):
    write_spec(tmp_path, """
max_attempts: 2
axes:
  declared: [yes_, no_]
stages:
  - name: rl
    when: {declared: yes_}
    command: date +%s%N > ${run_dir}/ckpt.txt; echo ${declared}; exit 1
    resources: {max_requeues: 3}
  - name: rl
    when: {declared: no_}
    command: date +%s%N > ${run_dir}/ckpt.txt; echo ${declared}; exit 1
    resources: {checkpoint: nn/model.pt}
""")
    near("sweep", "add", "sweeps/t.yaml", cwd=tmp_path)
    r = near("sweep", "run", "experiments/t", cwd=tmp_path, check=False, timeout=120)
    assert r.returncode == 1
    by = {j.params["declared"]: j for j in JobTable.open(tmp_path / "experiments" / "t").jobs()}
    declared, undeclared = by["yes_"], by["no_"]
    # its checkpoint changes every time: never charged, but capped by max_requeues
    assert (declared.state, declared.attempts, declared.charged) == ("failed", 4, 0), declared.reason
    assert "gave up after 3 uncharged attempts (max_requeues 3)" in declared.reason
    # a file it does not declare is no progress: max_attempts ends it
    assert (undeclared.state, undeclared.attempts, undeclared.charged) == ("failed", 2, 2), undeclared.reason
    show = near("sweep", "show", "experiments/t", declared.job_id, cwd=tmp_path).stdout
    assert "crashes 4, 0 of max_attempts 2 charged" in show and "of max_requeues 3 uncharged" in show


def _supervised_count_job(tmp_path) -> tuple[subprocess.Popen, Path]:
    """The supervisor of a counting job whose graceful stop takes 0.5 s, started as a controller does."""
    from near.executors import runner

    run_dir = tmp_path / "runs" / "job"
    task = runner.Task("job", "t", "rl", f"{JOB} --run-dir {run_dir} --n 1000 --sleep 0.02 --stop-delay 0.5",
                       str(run_dir), str(tmp_path), {}, {})
    runner.prepare(task)
    proc = subprocess.Popen([sys.executable, "-m", "near.executors.runner", str(run_dir)],
                            start_new_session=True, env=runner.job_env(task),
                            stdout=open(run_dir / "stdout.log", "ab"), stderr=open(run_dir / "stderr.log", "ab"))
    wait_for(lambda: ckpt(str(run_dir)) >= 3, what="job progress")
    return proc, run_dir


@pytest.mark.parametrize("signals,status,reason", [
    # a dying controller's threads each hand the supervisor on with the parent-death signal: one stop
    ([signal.SIGHUP] * 3, 3, None),
    # a controller's second stop within the job's grace SIGKILLs the job
    ([signal.SIGTERM] * 2, 3, "interrupted by SIGTERM (its exit status 137)"),
])
def test_repeated_parent_death_signals_are_one_stop_and_a_second_stop_kills(tmp_path, signals, status, reason):
    from near.executors import outcomes

    proc, run_dir = _supervised_count_job(tmp_path)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.05)
    assert proc.wait(timeout=30) == status
    (outcome,) = outcomes.read_outcomes(run_dir, "job")
    assert (outcome.exit_code, outcome.reason) == (status, reason)
    graceful = "interrupted at" in (run_dir / "stdout.log").read_text()
    assert graceful == (reason is None), "the job's own graceful stop ran iff nothing SIGKILLed it"
