"""Every issue-5 algorithm x environment pair trains a few iterations on CPU through the real
`near train` command line, logs its tags, checkpoints, and resumes to the same curve; the
evaluation run computes the metrics from the checkpoint.

The training runs call ``near.cli.main`` in this process (the same code path as the console
script, without paying torch's import for each of the dozen runs); the evaluation run and the
NCSN stage run as real subprocesses. (NEAR and PPO on the maze: the training core's own tests.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from _training_helpers import run_cli, scalars

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEAR = [sys.executable, "-m", "near"]
TINY = ["num_envs=16", "torch_threads=1", "++train.params.config.save_frequency=1",
        "++train.params.config.print_stats=False"]
METRIC_TAGS = {"dtw_error/step", "sparc/step", "root_velocity/step", "root_acceleration/step", "root_jerk/step",
               "success_rate/step", "episode_lengths/step"}


def _run(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(NEAR + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc




@pytest.fixture(scope="module")
def ncsn_dir(tmp_path_factory) -> str:
    run_dir = str(tmp_path_factory.mktemp("ncsn_motion"))
    _run(["train", "ncsn", "task=motionNEAR", f"run_dir={run_dir}", "torch_threads=1",
          "++task.env.motion_file=figure8",
          "++train.params.config.near_config.training.n_iters=30",
          "++train.params.config.near_config.training.snapshot_freq=10",
          "++train.params.config.near_config.training.eval_freq=10"])
    assert os.path.isfile(os.path.join(run_dir, "nn", "checkpoint.pth"))
    assert os.path.isfile(os.path.join(run_dir, "nn", "running_mean_std.pth"))
    return run_dir


CASES = {
    "motionAMP": (["++task.env.motion_file=stepturn"], {"losses/disc_loss", "info/disc_demo_acc",
                                                       "minibatch_disc_reward/step"} | METRIC_TAGS),
    "motionTrack": (["++task.env.motion_file=figure8"], {"minibatch_tracking_reward/step",
                                                        "info/tracking_error_pose"} | METRIC_TAGS),
    "motionPPO": (["++task.env.motion_file=all.yaml"], METRIC_TAGS),
    "motionNEAR": ([], {"minibatch_energy/step", "ncsn_perturbation_level/step"} | METRIC_TAGS),
    "mazeAMP": ([], {"losses/disc_loss", "info/disc_agent_acc", "success_rate/step"}),
    "mazeTrack": ([], {"minibatch_tracking_reward/step", "success_rate/step"}),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_trains_logs_checkpoints_and_resumes(task, tmp_path, request, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    extra, tags = CASES[task]
    if task == "motionNEAR":
        ncsn = request.getfixturevalue("ncsn_dir")
        extra = ["++task.env.motion_file=figure8",
                 f"++train.params.config.near_config.inference.eb_model_checkpoint={ncsn}/nn/checkpoint.pth",
                 f"++train.params.config.near_config.inference.running_mean_std_checkpoint={ncsn}/nn/running_mean_std.pth"]
    # episodes end within the tiny budget, so the per-episode metrics are logged
    extra = extra + (["++task.env.episodeLength=12"] if task.startswith("motion") else ["++task.env.maxEpisodeLength=20"])
    run_dir = str(tmp_path / task)
    args = ["train", "rl", f"task={task}", f"run_dir={run_dir}", *TINY, *extra]
    run_cli(args + ["max_iterations=2"], capsys)
    first = scalars(run_dir)
    missing = tags - set(first)
    assert not missing, f"{task}: tags not logged: {sorted(missing)}"
    ckpt = torch.load(os.path.join(run_dir, "nn", "checkpoint.pth"), map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 2
    if "AMP" in task:
        assert {"disc", "disc_optimizer", "replay", "amp_normalizer"} <= set(ckpt["extra"])
        assert ckpt["extra"]["replay"]["size"] > 0

    assert "resumed from" in run_cli(args + ["max_iterations=4"], capsys)
    second = scalars(run_dir)
    steps = [s for s, _ in second["losses/a_loss"]]
    assert len(steps) == 4 and len(set(steps)) == 4 and steps == sorted(steps)
    assert second["losses/a_loss"][:2] == first["losses/a_loss"]  # the first two epochs are kept as they were


def test_amp_without_its_replay_in_checkpoints_resumes_and_refills_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    run_dir = str(tmp_path / "amp")
    args = ["train", "rl", "task=mazeAMP", f"run_dir={run_dir}", *TINY, "++task.env.maxEpisodeLength=20",
            "++train.params.config.amp_replay_in_checkpoint=false"]
    run_cli(args + ["max_iterations=2"], capsys)
    ckpt = torch.load(os.path.join(run_dir, "nn", "checkpoint.pth"), map_location="cpu", weights_only=False)
    assert ckpt["extra"]["replay"] is None and ckpt["extra"]["disc"]
    assert "resumed from" in run_cli(args + ["max_iterations=4"], capsys)
    disc = [s for s, _ in scalars(run_dir)["losses/disc_loss"]]
    assert len(disc) == 4 and disc == sorted(set(disc))


def test_amp_discriminator_steps_take_rollout_replay_and_demo_batches_as_near_does(tmp_path, capsys, monkeypatch):
    """amp_minibatch_size rollout transitions per step, as many replayed ones once the buffer holds
    any, as many demonstrations; amp_batch_size / amp_minibatch_size steps per mini-epoch."""
    from near.training.algos import amp

    monkeypatch.chdir(REPO)
    calls: list[tuple[int, int]] = []
    real = amp.disc_loss

    def spy(disc, demo, agent, *args):
        calls.append((demo.shape[0], agent.shape[0]))
        return real(disc, demo, agent, *args)

    monkeypatch.setattr(amp, "disc_loss", spy)
    run_cli(["train", "rl", "task=mazeAMP", f"run_dir={tmp_path / 'amp'}", *TINY, "max_iterations=2",
             "++train.params.config.mini_epochs=2", "++train.params.config.amp_batch_size=64",
             "++train.params.config.amp_minibatch_size=16"], capsys)
    assert len(calls) == 2 * 2 * 4  # epochs x mini-epochs x (64 / 16)
    assert calls[:8] == [(16, 16)] * 8  # the first epoch: the replay buffer is still empty
    assert calls[8:] == [(16, 32)] * 8


def test_evaluation_run_computes_metrics_from_a_checkpoint_and_for_a_random_policy(tmp_path):
    run_dir = str(tmp_path / "track")
    common = ["task=motionTrack", "num_envs=8", "torch_threads=1", "++task.env.episodeLength=20"]
    _run(["train", "rl", f"run_dir={run_dir}", "max_iterations=1", *common])
    out = tmp_path / "eval.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for extra in ([f"checkpoint={run_dir}", f"--out={out}"], ["--random"]):
        proc = subprocess.run([sys.executable, "-m", "near.training.eval_metrics", *common, "--episodes", "8", *extra],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["episodes"] == 8
        assert {"dtw_error", "sparc", "root_velocity", "root_acceleration", "root_jerk", "success_rate",
                "episode_length"} <= set(result)
    assert json.loads(out.read_text())["episodes"] == 8
    bad = subprocess.run([sys.executable, "-m", "near.training.eval_metrics", *common], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "checkpoint" in bad.stderr


def test_unknown_motion_is_a_clear_error(tmp_path, capsys):
    from near.cli import main

    code = main(["train", "rl", "task=motionPPO", f"run_dir={tmp_path}/x", "num_envs=4", "++task.env.motion_file=moonwalk"])
    err = capsys.readouterr().err
    assert code == 2
    assert "task.env.motion_file='moonwalk'" in err and "not a motion" in err and "figure8" in err
