"""Stage `rl`: plain PPO and NEAR on rl-games train, log NEAR's tags, checkpoint, resume exactly,
and stop cleanly on SIGTERM (exit 3). Real `near train` subprocesses, CPU, one thread, tiny budgets.
"""

from __future__ import annotations

import os

import pytest
import torch

from _training_helpers import near_train, near_train_interrupted, scalars

NC = "++train.params.config.near_config"
#: 16 envs x horizon 32 = 512 frames per epoch; short episodes so episode tags appear
SMALL = ["num_envs=16", "++task.env.maxEpisodeLength=20"]
FRAMES = 512


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("near-cache"))


@pytest.fixture(scope="module")
def ncsn(tmp_path_factory, cache):
    run_dir = str(tmp_path_factory.mktemp("ncsn") / "run")
    proc = near_train("ncsn", ["task=mazeNEAR", f"run_dir={run_dir}", f"{NC}.training.n_iters=100"], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [f"{NC}.inference.eb_model_checkpoint={run_dir}/nn/checkpoint.pth",
            f"{NC}.inference.running_mean_std_checkpoint={run_dir}/nn/running_mean_std.pth"]


def steps(run_dir: str, tag: str) -> list[int]:
    return [s for s, _ in scalars(run_dir)[tag]]


def test_ppo_trains_logs_checkpoints_and_resumes(tmp_path, cache):
    run_dir = str(tmp_path / "ppo")
    base = ["task=mazePPO", f"run_dir={run_dir}", *SMALL]
    first = near_train("rl", base + ["max_iterations=3"], cache)
    assert first.returncode == 0, first.stderr[-3000:]
    tags = scalars(run_dir)
    for tag in ("losses/a_loss", "losses/c_loss", "rewards/step", "episode_lengths/step", "success_rate/step",
                "demo_distance/step", "performance/step_fps"):
        assert tag in tags, tag
    state = torch.load(os.path.join(run_dir, "nn", "checkpoint.pth"), weights_only=False)
    assert state["epoch"] == 3 and state["frame"] == 3 * FRAMES
    assert {"model", "optimizer", "env_state", "rng", "agent_obs"} <= set(state)
    # checkpoint=PATH starts a new run dir from those weights and counters (rl-games' restore, as in NEAR)
    warm = str(tmp_path / "warm")
    started = near_train("rl", ["task=mazePPO", f"run_dir={warm}", *SMALL, "max_iterations=4",
                                f"checkpoint={run_dir}/nn/checkpoint.pth"], cache)
    assert started.returncode == 0, started.stderr[-3000:]
    assert steps(warm, "losses/a_loss") == [4 * FRAMES]
    assert torch.load(os.path.join(warm, "nn", "checkpoint.pth"), weights_only=False)["epoch"] == 4
    # the same command with a larger budget continues the same curve
    second = near_train("rl", base + ["max_iterations=5"], cache)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed" in second.stdout
    assert steps(run_dir, "losses/a_loss") == [FRAMES * k for k in range(1, 6)]
    # a finished run is left alone
    third = near_train("rl", base + ["max_iterations=5"], cache)
    assert third.returncode == 0 and "already finished" in third.stdout
    assert steps(run_dir, "losses/a_loss") == [FRAMES * k for k in range(1, 6)]


def test_near_logs_its_tags_and_resumes_exactly(tmp_path, cache, ncsn):
    base = ["task=mazeNEAR", *SMALL, *ncsn, f"{NC}.inference.sigma_level=-1", "++train.params.config.save_frequency=1"]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    assert near_train("rl", base + [f"run_dir={straight}", "max_iterations=4"], cache).returncode == 0
    assert near_train("rl", base + [f"run_dir={split}", "max_iterations=2"], cache).returncode == 0
    resumed = near_train("rl", base + [f"run_dir={split}", "max_iterations=4"], cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = scalars(straight), scalars(split)
    for tag in ("minibatch_energy/step", "minibatch_energy_reward/step", "minibatch_combined_reward/step",
                "minibatch_shaped_task_reward/step", "ncsn_perturbation_level/step", "episode_lengths/step",
                "rewards/step", "losses/a_loss", "losses/c_loss", "info/kl"):
        assert tag in a, tag
        # interrupted-and-resumed training reproduces the uninterrupted curve exactly
        assert a[tag] == b[tag], tag
    assert [s for s, _ in a["minibatch_energy/step"]] == [FRAMES * k for k in range(1, 5)]


def test_near_sigterm_checkpoints_exits_3_and_resumes(tmp_path, cache, ncsn):
    run_dir = str(tmp_path / "near")
    cmd = ["task=mazeNEAR", f"run_dir={run_dir}", *SMALL, *ncsn, "max_iterations=24",
           f"{NC}.inference.sigma_level=-1", "++train.params.config.save_frequency=1000"]
    code, out = near_train_interrupted("rl", cmd, cache, marker="epoch: 2/")
    assert code == 3, out[-3000:]
    stopped = torch.load(os.path.join(run_dir, "nn", "checkpoint.pth"), weights_only=False)["epoch"]
    assert 2 <= stopped < 24
    assert steps(run_dir, "losses/a_loss") == [FRAMES * k for k in range(1, stopped + 1)]
    again = near_train("rl", cmd, cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert steps(run_dir, "losses/a_loss") == [FRAMES * k for k in range(1, 25)]
    assert steps(run_dir, "ncsn_perturbation_level/step") == [FRAMES * k for k in range(1, 25)]


def test_composed_energy_models(tmp_path, cache, ncsn):
    ckpt = ncsn[0].split("=", 1)[1]
    rms = ncsn[1].split("=", 1)[1]
    run_dir = str(tmp_path / "composed")
    proc = near_train("rl", ["task=mazeNEAR", f"run_dir={run_dir}", *SMALL, "max_iterations=1",
                             f"{NC}.inference.eb_model_checkpoint={{walk:{ckpt},run:{ckpt}}}",
                             f"{NC}.inference.running_mean_std_checkpoint={{walk:{rms},run:{rms}}}",
                             f"{NC}.inference.composition_weights={{walk:0.7,run:0.3}}"], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "minibatch_energy/step" in scalars(run_dir)


def test_clear_errors(tmp_path, cache):
    humanoid = near_train("rl", ["task=HumanoidNEAR", "++task.sim.backend=isaacgym", f"run_dir={tmp_path}/h"], cache)
    assert humanoid.returncode == 2 and "Isaac Gym" in humanoid.stderr and "pip install" in humanoid.stderr
    missing = near_train("rl", ["task=mazeNEAR", f"run_dir={tmp_path}/m", *SMALL,
                                f"{NC}.inference.eb_model_checkpoint={tmp_path}/nope.pth"], cache)
    assert missing.returncode == 2 and "nope.pth" in missing.stderr
    bad = near_train("rl", ["task=mazeNEAR", "++train.params.config.no_such.key=1=2", "tsk=x"], cache)
    assert bad.returncode == 2 and "do not compose" in bad.stderr


@pytest.mark.parametrize("window", [5, 50])
def test_episode_meter_keeps_rl_games_window_mean_without_reading_counts_back(window):
    """The per-episode metric means are rl-games' AverageMeter's, fed a mask instead of a selection."""
    from rl_games.algos_torch import torch_ext

    from near.training.algos.ppo import EpisodeMeter

    gen = torch.Generator().manual_seed(window)
    ours, theirs = EpisodeMeter(window, "cpu"), torch_ext.AverageMeter(1, window)
    for step in range(200):
        values = torch.randn(40, generator=gen)
        mask = torch.rand(40, generator=gen) < (0.3 if step % 7 else 0.0)  # some steps end no episode
        ours.update(values, mask)
        theirs.update(values[mask][:, None])
        assert float(ours.mean) == pytest.approx(float(theirs.mean), abs=1e-5)
        assert int(ours.current_size) == int(theirs.current_size)
    ours.current_size = 3  # a checkpoint's int
    assert float(ours.current_size) == 3.0


def test_episode_meter_rows_update_together_as_separate_meters():
    """The PPO base feeds every episode metric into one meter of several rows: one set of kernels."""
    from near.training.algos.ppo import EpisodeMeter

    gen = torch.Generator().manual_seed(1)
    batched, single = EpisodeMeter(6, "cpu", rows=3), [EpisodeMeter(6, "cpu") for _ in range(3)]
    for step in range(30):
        values, mask = torch.randn(3, 20, generator=gen), torch.rand(3, 20, generator=gen) < 0.2
        batched.update(values, mask)
        for k, meter in enumerate(single):
            meter.update(values[k], mask[k])
    assert torch.allclose(batched.mean, torch.cat([m.mean for m in single]))
    assert batched.current_size.tolist() == [float(m.current_size) for m in single]
