"""Stage `rl`: plain PPO and NEAR on rl-games train, log NEAR's tags, checkpoint, resume exactly,
and stop cleanly on SIGTERM (exit 3). Real `near train` subprocesses, CPU, one thread, tiny budgets.
"""

from __future__ import annotations

import math
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


def test_near_rollout_is_rl_games_rollout_without_syncs(tmp_path, monkeypatch):
    """Inside a real training run, each rollout is played twice from the same state: by rl-games'
    ``play_steps`` (finished episodes selected by index) and by near's loop (by mask). The recorded
    tensors and the reward and length meters must agree."""
    from rl_games.algos_torch import torch_ext
    from rl_games.common import a2c_common

    from near.training.algos.ppo import PPOAgent
    from near.training.entry import train_rl_stage

    monkeypatch.setenv("NEAR_CACHE_DIR", str(tmp_path / "cache"))
    ours = PPOAgent._rollout_steps
    compared = []

    def both(self):
        env = self.vec_env.env
        start = (torch.get_rng_state(), env.state_dict(), self.obs["obs"].clone(), self.dones.clone(),
                 self.current_rewards.clone(), self.current_shaped_rewards.clone(), self.current_lengths.clone())
        meters = {}
        for name in ("game_rewards", "game_shaped_rewards", "game_lengths"):
            meter = getattr(self, name)
            reference = torch_ext.AverageMeter(meter.mean.shape[0], self.games_to_track)
            reference.mean, reference.current_size = meter.mean.clone(), int(meter.current_size.max())
            meters[name] = (meter, reference)
            setattr(self, name, reference)
        reference_batch = {k: v.clone() if torch.is_tensor(v) else v
                           for k, v in a2c_common.A2CBase.play_steps(self).items()}
        reference_end = (self.current_rewards.clone(), self.current_lengths.clone(),
                         self.experience_buffer.tensor_dict["rewards"].clone())
        torch.set_rng_state(start[0])
        env.load_state_dict(start[1])
        self.obs["obs"], self.dones = start[2].clone(), start[3].clone()
        self.current_rewards, self.current_shaped_rewards, self.current_lengths = (t.clone() for t in start[4:])
        self._rollout["n"] = 0
        for name, (meter, _) in meters.items():
            setattr(self, name, meter)
        batch = ours(self)
        for key in ("obses", "actions", "values", "neglogpacs", "mus", "sigmas", "dones"):
            assert torch.equal(batch[key], reference_batch[key]), key
        assert torch.equal(self.experience_buffer.tensor_dict["rewards"], reference_end[2])
        assert torch.equal(self.current_rewards, reference_end[0]) and torch.equal(self.current_lengths, reference_end[1])
        for name, (meter, reference) in meters.items():
            assert int(meter.current_size.max()) == reference.current_size, name
            assert torch.allclose(meter.mean.reshape(-1), reference.mean.reshape(-1), atol=1e-5), name
        compared.append(int(self.game_lengths.current_size.max()))
        return batch

    monkeypatch.setattr(PPOAgent, "_rollout_steps", both)
    code = train_rl_stage(["task=mazePPO", f"run_dir={tmp_path / 'run'}", "device=cpu", "torch_threads=1",
                           *SMALL, "max_iterations=3"])
    assert code == 0
    # three rollouts compared, and episodes ended in them (16 envs, 20-step episodes, 32 steps each)
    assert len(compared) == 3 and compared[-1] > 0


def test_policy_samples_are_rl_games_gaussian_without_the_std_check(tmp_path, monkeypatch):
    """near's action step draws from rl-games' Gaussian policy (mu, sigma from the same network) and
    reports its negative log-likelihood, written out here."""
    from rl_games.algos_torch.a2c_continuous import A2CAgent

    from near.training.algos.ppo import PPOAgent
    from near.training.entry import train_rl_stage

    monkeypatch.setenv("NEAR_CACHE_DIR", str(tmp_path / "cache"))
    ours = PPOAgent.get_action_values
    checked = []

    def check(self, obs):
        res = ours(self, obs)
        reference = A2CAgent.get_action_values(self, obs)  # rl-games' own
        for key in ("mus", "sigmas", "values"):
            assert torch.allclose(res[key], reference[key]), key
        mu, sigma, a = res["mus"], res["sigmas"], res["actions"]
        written_out = (0.5 * ((a - mu) / sigma) ** 2 + torch.log(sigma) + 0.5 * math.log(2 * math.pi)).sum(-1)
        assert torch.allclose(res["neglogpacs"], written_out, atol=1e-4)
        # many draws from one state: the policy's mean and spread
        many = torch.stack([ours(self, obs)["actions"] for _ in range(400)])
        assert torch.allclose(many.mean(0), mu, atol=4 * float(sigma.max()) / 20)
        assert torch.allclose(many.std(0), sigma, rtol=0.2)
        checked.append(True)
        return res

    monkeypatch.setattr(PPOAgent, "get_action_values", lambda self, obs: check(self, obs) if len(checked) < 2
                        else ours(self, obs))
    assert train_rl_stage(["task=mazePPO", f"run_dir={tmp_path / 'run'}", "device=cpu", "torch_threads=1",
                           *SMALL, "max_iterations=1"]) == 0
    assert len(checked) == 2
