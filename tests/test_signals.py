"""What the README promises about stopping: `near train` exits 3 (interrupted, resumable) on
SIGTERM whenever it arrives once the stage began, also before its first epoch, and on a first
Ctrl-C (a second stops it at once); and a job that `near sweep run` stops gets 3 / pending
recorded, never done."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from _training_helpers import FAST, NEAR, REPO, env, near_train, near_train_interrupted

from near.training.runtime import StopRequest, atomic_save

from near.jobtable import JobSpec, JobTable


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def test_near_train_sigterm_before_the_first_epoch_exits_3(tmp_path):
    run_dir = tmp_path / "ppo"
    e = env()
    e["NEAR_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.Popen([*NEAR, "train", "rl", *FAST, "task=mazePPO", f"run_dir={run_dir}", "num_envs=16",
                             "max_iterations=50"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=e, cwd=REPO)
    _wait_for(run_dir / "config.yaml", proc)  # the stage has begun: config composed, nothing trained
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out[-3000:]


def test_a_stopped_job_records_its_own_interruption_not_done(tmp_path):
    """SIGTERM reaching `near sweep run` while the job's shell is between two commands (in a
    builtin loop): the job ends interrupted (exit 3, pending, attempt refunded), never done."""
    from near.executors.local import run_local

    t = JobTable.create(tmp_path / "exp")
    marker = tmp_path / "end"
    t.add([JobSpec("j", "rl", f"trap 'echo cleanup' EXIT; touch {tmp_path}/began; "
                               f"while true; do : ; done; touch {marker}")])
    began = tmp_path / "began"
    pid = os.fork()
    if pid == 0:  # a stand-in for the user's Ctrl-C: stop the controller once the job spins
        while not began.exists():
            time.sleep(0.02)
        time.sleep(0.3)
        os.kill(os.getppid(), signal.SIGTERM)
        os._exit(0)
    res = run_local(t, 1, log=lambda m: None, grace_s=5.0)
    os.waitpid(pid, 0)
    j = t.get("j")
    assert res.interrupted and (j.state, j.exit_code, j.attempts) == ("pending", 3, 0), (j.state, j.reason)
    assert not marker.exists()


def test_ctrl_c_in_near_train_checkpoints_exits_3_and_the_same_command_resumes(tmp_path):
    run_dir = tmp_path / "ppo"
    cache = str(tmp_path / "cache")
    # no periodic checkpoint: the one found must be the one Ctrl-C asked for
    cmd = ["task=mazePPO", f"run_dir={run_dir}", "num_envs=16", "max_iterations=400",
           "++train.params.config.save_frequency=100000"]
    code, out = near_train_interrupted("rl", cmd, cache, marker="epoch: 2/", sig=signal.SIGINT)
    assert code == 3, out[-3000:]
    assert "Ctrl-C again stops at once" in out
    stopped = torch.load(run_dir / "nn" / "checkpoint.pth", weights_only=False)["epoch"]
    assert 2 <= stopped < 400
    again = near_train("rl", cmd, cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"at epoch {stopped}" in again.stdout + again.stderr


def test_a_second_ctrl_c_stops_at_once_and_an_ignored_one_stays_ignored():
    before = signal.getsignal(signal.SIGINT)
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs in the main thread at the next bytecode
        assert stop.requested and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGINT) is before

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stop = StopRequest().install()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == stop._handle
        stop.uninstall()
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_save_stopped_half_way_leaves_the_last_checkpoint_and_no_temporary_file(tmp_path):
    class Interrupting:
        def __reduce__(self):
            raise KeyboardInterrupt  # a second Ctrl-C while the checkpoint is being written

    path = tmp_path / "nn" / "checkpoint.pth"
    atomic_save({"epoch": 3}, str(path))
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 4, "x": Interrupting()}, str(path))
    assert torch.load(path, weights_only=False) == {"epoch": 3}
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pth"]
