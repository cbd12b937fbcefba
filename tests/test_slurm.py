"""The SLURM executor against the REAL local cluster (`make slurm-up`): no fake sbatch, no mocked sacct.

The time-out test needs ~3 minutes of work under a 1-minute limit; its job is submitted by the first
test that runs and checked by the last one, so the rest of the module runs meanwhile.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from near.errors import ConfigError
from near.executors.slurm_profile import load_profile, profile_from_dict
from near.jobtable import JobSpec, JobTable
from tests._slurm_helpers import (
    NEAR, REPO, job_cmd, jobs, make_sweep, near, require_cluster, squeue_ids, starts_logged, steps_logged,
    wait_until,
)

LOCAL = REPO / "slurm" / "local.yaml"
LONG_STEPS = 180  # x 1 s: 3 minutes of work under a 1-minute time limit


# --------------------------------------------------------------------------- profiles (no cluster)
def test_profiles_load_and_validate(tmp_path: Path) -> None:
    local = load_profile(LOCAL)
    assert local.partition == "debug" and local.cpus == 1 and local.time == 10
    a100 = load_profile(REPO / "slurm" / "example_a100.yaml")
    assert (a100.partition, a100.gpus, a100.cpus, a100.time) == ("gpu-a100", 1, 8, 60)
    assert any("module load" in line for line in a100.setup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: debug\ngpu: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'gpu'"):
        load_profile(bad)
    with pytest.raises(ConfigError, match="'time'"):
        profile_from_dict({"time": "an hour"}, "x.yaml")
    with pytest.raises(ConfigError, match="'cpus'"):
        profile_from_dict({"cpus": "8"}, "x.yaml")
    assert profile_from_dict({"time": "1-00:30:00"}).time == 24 * 60 + 30


def test_cli_rejects_unknown_profile_key(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("partiton: debug\n")
    make_sweep(tmp_path / "exp", [JobSpec(job_id="x", stage="s", command="true")])
    out = near("sweep", "submit", tmp_path / "exp", "--profile", bad, check=False)
    assert out.returncode == 2 and "p.yaml" in out.stderr and "partiton" in out.stderr


# --------------------------------------------------------------------------- real cluster
@pytest.fixture(scope="module")
def cluster() -> None:
    require_cluster()


@pytest.fixture(scope="module")
def long_sweep(cluster, tmp_path_factory):
    """Submit the 3-minutes-of-work job under a 1-minute limit (checked by the last test)."""
    exp = make_sweep(tmp_path_factory.mktemp("timeout") / "timeout",
                     [JobSpec(job_id="long", stage="rl", command=job_cmd(steps=LONG_STEPS, step_s=1.0))])
    prof = exp.parent / "short.yaml"
    prof.write_text(LOCAL.read_text().replace("time: 10", "time: 1"))
    near("sweep", "submit", exp, "--profile", prof)
    yield exp
    near("sweep", "cancel", exp)  # no-op when it finished; else leave nothing behind on the cluster


@pytest.mark.slurm
def test_sweep_of_real_jobs_completes(long_sweep, tmp_path: Path) -> None:
    exp = make_sweep(tmp_path / "demo", [
        *[JobSpec(job_id=f"ncsn{i}", stage="ncsn", command=job_cmd(steps=2, step_s=0.2)) for i in range(3)],
        *[JobSpec(job_id=f"rl{i}", stage="rl", command=job_cmd(steps=2, step_s=0.2, needs="ncsn"),
                  deps={"ncsn": f"ncsn{i}"}) for i in range(3)],
    ])
    out = near("sweep", "submit", exp, "--profile", LOCAL)
    assert "6 job(s) submitted in 2 sbatch call(s)" in out.stdout
    assert "aftercorr" in out.stdout  # each rl task waits for its own ncsn task only
    wait_until(lambda: all(j.state == "done" for j in jobs(exp).values()), 120, "all done", exp, sync=True)
    recs = jobs(exp)
    for j in recs.values():
        assert (Path(j.run_dir) / "done").exists()
        assert j.scheduler_id and "_" in j.scheduler_id and j.attempts == 1
    # the rl array is another sbatch than the ncsn array
    assert recs["rl0"].scheduler_id.split("_")[0] != recs["ncsn0"].scheduler_id.split("_")[0]
    assert near("sweep", "submit", exp, "--profile", LOCAL).stdout.startswith("0 job(s) submitted")


@pytest.mark.slurm
def test_double_and_concurrent_submit_queue_nothing_twice(cluster, tmp_path: Path) -> None:
    exp = make_sweep(tmp_path / "twice", [
        *[JobSpec(job_id=f"a{i}", stage="a", command=job_cmd()) for i in range(6)],
        *[JobSpec(job_id=f"b{i}", stage="b", command=job_cmd(needs="up"), deps={"up": f"a{i}"}) for i in range(6)],
    ])
    try:
        outs: list[subprocess.CompletedProcess] = []
        threads = [threading.Thread(target=lambda: outs.append(near("sweep", "submit", exp, "--profile", LOCAL,
                                                                   "--hold"))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outs.append(near("sweep", "submit", exp, "--profile", LOCAL, "--hold"))
        total = sum(int(o.stdout.splitlines()[-1].split()[0]) for o in outs)
        assert total == 12, [o.stdout for o in outs]
        ids = squeue_ids("near-twice-a") + squeue_ids("near-twice-b")
        assert len(ids) == 12 and len(set(ids)) == 12
        recs = jobs(exp)
        assert sorted(r.scheduler_id for r in recs.values()) == sorted(ids)
        with JobTable.open(exp) as t:
            for jid in recs:
                queued = [e for e in t.history(jid) if e.to_state == "queued"]
                assert len(queued) == 1, (jid, queued)
    finally:
        out = near("sweep", "cancel", exp)
        assert "cancelled 12 job(s)" in out.stdout
    wait_until(lambda: not squeue_ids("near-twice-a") + squeue_ids("near-twice-b"), 60, "scancel", exp)
    assert {r.state for r in jobs(exp).values()} == {"cancelled"}


def _scontrol(sid: str) -> str:
    return subprocess.run(["scontrol", "show", "job", sid], capture_output=True, text=True, check=True).stdout


@pytest.mark.slurm
def test_stage_resources_and_throttle_reach_sbatch_and_status_shows_ids(cluster, tmp_path: Path) -> None:
    small = {"time": "00:05:00", "mem": "300M", "slurm": {"comment": "near-small"}}  # a spec's resources
    exp = make_sweep(tmp_path / "res", [
        *[JobSpec(job_id=f"s{i}", stage="rl", command=job_cmd(), resources=small) for i in range(3)],
        JobSpec(job_id="big", stage="rl", command=job_cmd(), resources={"time": "00:07:00"}),
    ])
    prof = tmp_path / "throttle.yaml"
    prof.write_text(LOCAL.read_text().replace("max_running: 8", "max_running: 2"))
    try:
        out = near("sweep", "submit", exp, "--profile", prof, "--hold")
        assert "4 job(s) submitted in 2 sbatch call(s)" in out.stdout  # one array per resource group
        recs = jobs(exp)
        s0 = _scontrol(recs["s0"].scheduler_id)
        for field in ("TimeLimit=00:05:00", "MinMemoryNode=300M", "Comment=near-small", "ArrayTaskThrottle=2"):
            assert field in s0, (field, s0)
        big = _scontrol(recs["big"].scheduler_id)
        assert "TimeLimit=00:07:00" in big and "near-small" not in big
        status = near("sweep", "status", exp).stdout
        for r in recs.values():
            assert f"[{r.scheduler_id}]" in status and r.state == "queued"
        # one squeue + one sacct call for all the arrays, not one per job; held jobs stay queued
        assert "synced 4 active job(s) with 2 scheduler call(s)" in near("sweep", "sync", exp).stdout
        assert {r.state for r in jobs(exp).values()} == {"queued"}
    finally:
        near("sweep", "cancel", exp)
    status = near("sweep", "status", exp).stdout
    assert status.count("cancelled by user") == 4, status  # reasons shown


@pytest.mark.slurm
def test_failing_first_stage_blocks_dependents(cluster, tmp_path: Path) -> None:
    exp = make_sweep(tmp_path / "fails", [
        JobSpec(job_id="a0", stage="ncsn", command=job_cmd(fail=True), max_attempts=1),
        JobSpec(job_id="a1", stage="ncsn", command=job_cmd(steps=1, step_s=0.2)),
        JobSpec(job_id="shared", stage="ncsn", command=job_cmd(fail=True), max_attempts=1),
        JobSpec(job_id="b0", stage="rl", command=job_cmd(steps=1, needs="up"), deps={"up": "a0"}),
        JobSpec(job_id="b1", stage="rl", command=job_cmd(steps=1, needs="up"), deps={"up": "a1"}),
        JobSpec(job_id="c0", stage="rl", command=job_cmd(steps=1, needs="up"), deps={"up": "shared"}),
        JobSpec(job_id="c1", stage="rl", command=job_cmd(steps=1, needs="up"), deps={"up": "shared"}),
    ])
    near("sweep", "submit", exp, "--profile", LOCAL)

    def settled():
        r = jobs(exp)
        return r["a0"].state == "failed" and r["shared"].state == "failed" and \
            all(r[j].state in ("blocked", "done", "pending") for j in ("b0", "b1", "c0", "c1"))

    # first sync only once SLURM has removed the rl array (as a user's later sync would see it): sacct
    # then reports even b1, whose own dependency succeeded, as CANCELLED with no reason
    wait_until(lambda: not squeue_ids("near-fails-ncsn") + squeue_ids("near-fails-rl"), 120, "arrays gone", exp)
    wait_until(settled, 120, "first stage failed, dependents settled", exp, sync=True)
    assert jobs(exp)["b1"].state in ("pending", "done"), jobs(exp)["b1"].reason
    r = jobs(exp)
    assert "exit code 1" in r["a0"].reason and r["a0"].exit_code == 1 and r["a1"].state == "done"
    for j in ("b0", "c0", "c1"):
        assert r[j].state == "blocked" and "failed" in r[j].reason, (j, r[j].reason)
        assert not (Path(r[j].run_dir) / "progress.log").exists()  # never ran
    # nothing of this sweep is left pending on the cluster (no DependencyNeverSatisfied zombies)
    wait_until(lambda: not squeue_ids("near-fails-rl"), 30, "no rl job left in squeue", exp)
    # b1's dependency succeeded: it ran, or (removed with its array) is resubmitted by the next submit
    if r["b1"].state == "pending":
        near("sweep", "submit", exp, "--profile", LOCAL)
    wait_until(lambda: jobs(exp)["b1"].state == "done", 60, "b1 done", exp, sync=True)
    assert {j: s.state for j, s in jobs(exp).items() if s.state == "blocked"} == \
        {"b0": "blocked", "c0": "blocked", "c1": "blocked"}


@pytest.mark.slurm
def test_crash_is_retried_by_the_next_submit_up_to_max_attempts(cluster, tmp_path: Path) -> None:
    exp = make_sweep(tmp_path / "crash", [
        JobSpec(job_id="x", stage="rl", command=job_cmd(fail=True), max_attempts=2),
        JobSpec(job_id="y", stage="eval", command=job_cmd(steps=1, needs="up"), deps={"up": "x"}),
    ])
    near("sweep", "submit", exp, "--profile", LOCAL)
    wait_until(lambda: jobs(exp)["x"].state == "pending" and jobs(exp)["y"].state == "pending", 60,
               "crash recorded, dependent put back", exp, sync=True)
    assert "crashed (exit code 1); will be resubmitted (1/2)" in jobs(exp)["x"].reason
    wait_until(lambda: not squeue_ids("near-crash-eval"), 30, "dependent removed from the cluster", exp)
    near("sweep", "submit", exp, "--profile", LOCAL)
    wait_until(lambda: jobs(exp)["x"].state == "failed", 60, "second crash -> failed", exp, sync=True)
    wait_until(lambda: jobs(exp)["y"].state == "blocked", 30, "dependent blocked", exp, sync=True)
    x = jobs(exp)["x"]
    assert x.attempts == 2 and "max_attempts 2" in x.reason
    assert len(starts_logged(x.run_dir)) == 2
    assert near("sweep", "submit", exp, "--profile", LOCAL).stdout.startswith("0 job(s) submitted")


@pytest.mark.slurm
def test_wait_resubmits_crashes_and_exits_by_the_outcome(cluster, tmp_path: Path) -> None:
    exp = make_sweep(tmp_path / "wait", [
        JobSpec(job_id="ok", stage="rl", command=job_cmd(steps=2, step_s=0.2)),
        JobSpec(job_id="x", stage="rl", command=job_cmd(fail=True), max_attempts=2),
    ])
    near("sweep", "submit", exp, "--profile", LOCAL)
    out = near("sweep", "wait", exp, "--profile", LOCAL, "--poll", "1", "--timeout", "200", check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "(1 resubmitted)" in out.stdout and "NOT every job is done" in out.stdout
    assert "done 1  failed 1" in out.stdout.splitlines()[-2]  # the last counts line
    recs = jobs(exp)
    assert recs["ok"].state == "done" and recs["x"].state == "failed" and recs["x"].attempts == 2
    assert len(starts_logged(recs["x"].run_dir)) == 2

    # a command that names near's console script works on the node although the submitter's PATH
    # (which sbatch exports) lacks the installation's bin dir
    fine = make_sweep(tmp_path / "fine", [
        JobSpec(job_id="a", stage="rl", command=job_cmd(steps=1, step_s=0.1)),
        JobSpec(job_id="by_name", stage="rl", command="near sweep --help > ${run_dir}/help.txt"),
    ])
    bare = {**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    subprocess.run([*NEAR, "sweep", "submit", str(fine), "--profile", str(LOCAL)], cwd=REPO, env=bare,
                   check=True, capture_output=True, timeout=120)
    out = near("sweep", "wait", fine, "--poll", "1", "--timeout", "200", check=False)
    assert out.returncode == 0 and "every job is done" in out.stdout, out.stdout + out.stderr
    assert jobs(fine)["a"].state == "done"
    assert "usage: near sweep" in (Path(jobs(fine)["by_name"].run_dir) / "help.txt").read_text()


def _running_with_progress(exp: Path, job_id: str, n: int):
    def pred():
        rec = jobs(exp)[job_id]
        return rec.state == "running" and len(steps_logged(rec.run_dir)) >= n and rec
    return pred


@pytest.mark.slurm
def test_scancel_recorded_cancelled_and_resubmitted_only_when_asked(cluster, tmp_path: Path) -> None:
    exp = make_sweep(tmp_path / "scancel", [JobSpec(job_id="j", stage="rl", command=job_cmd(steps=30, step_s=0.5))])
    near("sweep", "submit", exp, "--profile", LOCAL)
    rec = wait_until(_running_with_progress(exp, "j", 3), 90, "job running", exp, sync=True)
    subprocess.run(["scancel", rec.scheduler_id], check=True)
    wait_until(lambda: jobs(exp)["j"].state == "cancelled", 60, "cancelled recorded", exp, sync=True)
    assert "cancelled" in jobs(exp)["j"].reason
    assert near("sweep", "submit", exp, "--profile", LOCAL).stdout.startswith("0 job(s) submitted")
    assert jobs(exp)["j"].state == "cancelled"
    out = near("sweep", "submit", exp, "--profile", LOCAL, "--resubmit", "cancelled")
    assert out.stdout.splitlines()[-1].startswith("1 job(s) submitted")
    wait_until(lambda: jobs(exp)["j"].state == "done", 90, "resubmitted job done", exp, sync=True)
    run_dir = jobs(exp)["j"].run_dir
    starts = starts_logged(run_dir)
    assert len(starts) == 2 and starts[1] > 0           # resumed from the checkpoint
    assert steps_logged(run_dir) == list(range(30))    # no step lost, none repeated


@pytest.mark.slurm
def test_scontrol_requeue_resumes_from_checkpoint(cluster, tmp_path: Path) -> None:
    exp = make_sweep(tmp_path / "requeue", [JobSpec(job_id="j", stage="rl", command=job_cmd(steps=40, step_s=0.5))])
    near("sweep", "submit", exp, "--profile", LOCAL)
    rec = wait_until(_running_with_progress(exp, "j", 4), 90, "job running", exp, sync=True)
    subprocess.run(["scontrol", "requeue", rec.scheduler_id], check=True)
    wait_until(lambda: jobs(exp)["j"].state == "done", 120, "requeued job done", exp, sync=True)
    j = jobs(exp)["j"]
    starts = starts_logged(j.run_dir)
    assert len(starts) == 2 and starts[1] >= 4
    assert steps_logged(j.run_dir) == list(range(40))
    assert j.attempts == 2 and j.scheduler_id == rec.scheduler_id
    with JobTable.open(exp) as t:
        assert any("interrupted by the scheduler" in (e.reason or "") for e in t.history("j"))


NODE_USER = "nearnode"


@pytest.fixture
def unprivileged(cluster):
    """An unprivileged user for the jobs (root submits them with ``sbatch --uid``) and a sweep folder
    it can reach; removed afterwards."""
    import pwd
    import shutil
    import stat
    import sys
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root: jobs run as another user through sbatch --uid")
    try:
        pwd.getpwnam(NODE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NODE_USER],
                       check=True)
    # accounting is enforced: the user needs an association (root's default account; idempotent)
    assoc = subprocess.run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={NODE_USER}", "format=account"],
                           capture_output=True, text=True, check=True).stdout.split()
    if not assoc:
        account = subprocess.run(["sacctmgr", "-n", "-P", "show", "user", "root", "format=defaultaccount"],
                                 capture_output=True, text=True, check=True).stdout.split()[0]
        subprocess.run(["sacctmgr", "-i", "add", "user", NODE_USER, f"account={account}"], check=False,
                       capture_output=True)
    root = Path(tempfile.mkdtemp(prefix="near-one-writer-", dir="/tmp"))
    root.chmod(0o755)
    # the user must reach this interpreter and the checkout (e.g. a pyenv under /root): let others
    # traverse (not list) the folders on the way that forbid it, for the test only
    opened = []
    for target in (Path(os.path.realpath(sys.executable)), REPO):
        for folder in target.parents:
            mode = folder.stat().st_mode
            if not mode & 0o001:
                folder.chmod(stat.S_IMODE(mode) | 0o001)
                opened.append((folder, stat.S_IMODE(mode)))
    try:
        yield root, pwd.getpwnam(NODE_USER).pw_uid
    finally:
        for folder, mode in reversed(opened):
            folder.chmod(mode)
        shutil.rmtree(root, ignore_errors=True)


SHORT_STEPS = 40


@pytest.mark.slurm
def test_nodes_that_cannot_open_the_job_table_still_bring_every_job_to_done(unprivileged) -> None:
    """One writer: the jobs run as a user that cannot even read jobs.db (mode 0600, root's); they
    report through outcome files only, and sync/wait fold them: scancel, scontrol requeue, a
    time-out and a crash in the mix, every job ends done."""
    root, uid = unprivileged
    exp = root / "onewriter"
    crash_once = "test -e ${run_dir}/crashed || { mkdir -p ${run_dir} && touch ${run_dir}/crashed; exit 1; }; "
    probe = "{ cat ${exp_dir}/jobs.db > /dev/null 2>&1 && echo readable || echo unreadable; } > ${run_dir}/probe; "
    make_sweep(exp, [
        JobSpec(job_id="crash", stage="rl", command=crash_once + job_cmd(steps=2, step_s=0.2), max_attempts=2),
        # long enough (20 s) that a sync under load sees them running before they end
        JobSpec(job_id="scancel", stage="rl", command=job_cmd(steps=SHORT_STEPS, step_s=0.5)),
        JobSpec(job_id="requeue", stage="rl", command=job_cmd(steps=SHORT_STEPS, step_s=0.5)),
        # 70 s of work under a 1-minute limit: one time-out, checkpoint, requeue, resume
        JobSpec(job_id="timeout", stage="rl", command=probe + job_cmd(steps=70, step_s=1.0)),
    ])
    (exp / "jobs.db").chmod(0o600)
    exp.chmod(0o777)  # the node creates runs/ here
    (exp / "slurm" / "submitit").mkdir(parents=True)
    (exp / "slurm" / "submitit").chmod(0o777)  # submitit's results and re-pickles, written by the node
    prof = root / "as_user.yaml"
    # --gid too: with root's group the job could not even reach an interpreter under /root
    prof.write_text(LOCAL.read_text().replace("time: 10", "time: 1")
                    + f"sbatch:\n  uid: {NODE_USER}\n  gid: {NODE_USER}\n")
    near("sweep", "submit", exp, "--profile", prof)
    try:
        # one at a time: on two CPUs beside the time-out job the two may never run together
        wait_until(_running_with_progress(exp, "scancel", 2), 120, "scancel job running", exp, sync=True)
        subprocess.run(["scancel", jobs(exp)["scancel"].scheduler_id], check=True)
        wait_until(_running_with_progress(exp, "requeue", 2), 120, "requeue job running", exp, sync=True)
        subprocess.run(["scontrol", "requeue", jobs(exp)["requeue"].scheduler_id], check=True)
        wait_until(lambda: jobs(exp)["scancel"].state == "cancelled", 90, "scancel recorded", exp, sync=True)
        near("sweep", "submit", exp, "--profile", prof, "--resubmit", "cancelled")
        out = near("sweep", "wait", exp, "--profile", prof, "--poll", "2", "--timeout", "360", check=False)
        assert out.returncode == 0 and "every job is done" in out.stdout, out.stdout + out.stderr
    finally:
        near("sweep", "cancel", exp, check=False)
    recs = jobs(exp)
    assert {j: r.state for j, r in recs.items()} == {j: "done" for j in recs}
    assert (exp / "jobs.db").stat().st_mode & 0o777 == 0o600 and (exp / "jobs.db").stat().st_uid == 0
    for r in recs.values():  # the jobs really ran as the other user and really found the table closed
        assert (Path(r.run_dir) / "progress.log").stat().st_uid == uid
        assert any((Path(r.run_dir) / "outcomes").glob("*-finished-*.json"))
    assert (Path(recs["timeout"].run_dir) / "probe").read_text().split()[0] == "unreadable"
    assert recs["crash"].crashes == 1 and recs["crash"].attempts == 2
    assert recs["requeue"].requeues >= 1 and recs["requeue"].attempts == 2
    assert recs["timeout"].requeues >= 1 and recs["timeout"].charged == 0
    for j in ("scancel", "requeue", "timeout"):
        assert steps_logged(recs[j].run_dir) == list(range(SHORT_STEPS if j != "timeout" else 70)), j


@pytest.mark.slurm
def test_timeout_requeue_resume_without_lost_progress(long_sweep: Path) -> None:
    """1-minute limit, 3 minutes of work: time-out -> checkpoint -> requeue -> resume, until done."""
    exp = long_sweep
    wait_until(lambda: jobs(exp)["long"].state in ("done", "failed"), 480, "long job finished", exp, every=3,
               sync=True)
    j = jobs(exp)["long"]
    assert j.state == "done", j.reason
    starts = starts_logged(j.run_dir)
    assert starts[0] == 0 and starts == sorted(starts)
    assert steps_logged(j.run_dir) == list(range(LONG_STEPS))   # nothing lost, nothing redone
    with JobTable.open(exp) as t:
        reasons = [e.reason or "" for e in t.history("long")]
    requeues = [r for r in reasons if r.startswith("timeout: checkpointed and requeued")]
    # at most 45 s of work fit in one 60 s allocation (15 s margin): >= 4 allocations, >= 3 requeues
    assert len(requeues) >= 3 and j.attempts == len(requeues) + 1, (requeues, j.attempts)
    # one scheduler job all along: requeued by SLURM, never resubmitted
    sacct = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-j", j.scheduler_id, "-o", "JobID,State"],
                           capture_output=True, text=True).stdout.split()
    assert sum("REQUEUED" in line for line in sacct) >= len(requeues), sacct


@pytest.mark.slurm
def test_killed_controller_while_jobs_finish_loses_nothing(cluster, tmp_path: Path) -> None:
    """`wait` (the controller on SLURM) SIGKILLed while its jobs run; they finish on the cluster
    with nobody watching; the next `wait` folds their outcome files: all done, none run again."""
    exp = make_sweep(tmp_path / "killed", [JobSpec(job_id=f"j{i}", stage="rl", command=job_cmd(steps=4, step_s=0.5))
                                           for i in range(3)])
    near("sweep", "submit", exp, "--profile", LOCAL)
    ctl = subprocess.Popen([*NEAR, "sweep", "wait", str(exp), "--profile", str(LOCAL), "--poll", "1"], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: any(steps_logged(r.run_dir) for r in jobs(exp).values()), 120, "a job running", exp)
    ctl.kill()
    ctl.wait()
    # the jobs finish on the cluster, unobserved
    wait_until(lambda: all(len(steps_logged(r.run_dir)) == 4 for r in jobs(exp).values()) and not squeue_ids(
        f"near-{exp.name}-rl"), 180, "the jobs finishing on the cluster", exp)
    assert any(r.state in ("queued", "running") for r in jobs(exp).values())  # nobody recorded them yet
    out = near("sweep", "wait", exp, "--profile", LOCAL, "--poll", "1", "--timeout", "120")
    assert "every job is done" in out.stdout and "resubmitted" not in out.stdout, out.stdout
    for r in jobs(exp).values():
        assert (r.state, r.attempts, r.crashes) == ("done", 1, 0)
        assert len(starts_logged(r.run_dir)) == 1  # ran exactly once
