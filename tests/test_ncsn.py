"""Stage `ncsn`: NEAR's energy model trains, logs, checkpoints, resumes and ranks demos first.

Every run is a real `near train ncsn` subprocess on CPU with one thread and a tiny budget.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch

from _training_helpers import near_train, near_train_interrupted, scalars

NCSN = "++train.params.config.near_config.training"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("near-cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache):
    run_dir = str(tmp_path_factory.mktemp("ncsn") / "run")
    proc = near_train("ncsn", ["task=mazeNEAR", f"run_dir={run_dir}", f"{NCSN}.n_iters=400",
                               f"{NCSN}.snapshot_freq=100", f"{NCSN}.eval_freq=100"], cache)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return run_dir


def test_outputs_and_tags(trained):
    assert os.path.isfile(os.path.join(trained, "nn", "checkpoint.pth"))
    assert os.path.isfile(os.path.join(trained, "nn", "running_mean_std.pth"))
    assert os.path.isfile(os.path.join(trained, "ncsn_config.yaml"))
    tags = scalars(trained)
    assert [s for s, _ in tags["loss"]] == list(range(1, 401))
    assert [s for s, _ in tags["demo_data_energy/sigma_level_0"]] == [100, 200, 300, 400]
    assert "random_data_energy/sigma_level_49" in tags
    state = torch.load(os.path.join(trained, "nn", "checkpoint.pth"), weights_only=False)
    assert state["step"] == 400 and state["ema"] is not None and len(state["sigmas"]) == 50
    # geometric schedule from sigma_begin to sigma_end (ncsnv2)
    assert state["sigmas"][0] == pytest.approx(20.0) and state["sigmas"][-1] == pytest.approx(0.01)


def test_energy_ranks_demo_transitions_above_random(trained, cache):
    from rl_games.algos_torch.running_mean_std import RunningMeanStd

    from near.training.envs import maze
    from near.training.ncsn.model import energies
    from near.training.ncsn.trainer import load_energy_model

    torch.set_num_threads(1)
    net, sigmas = load_energy_model(os.path.join(trained, "nn", "checkpoint.pth"), "cpu")
    rms = RunningMeanStd((4,))
    rms.load_state_dict(torch.load(os.path.join(trained, "nn", "running_mean_std.pth")))
    rms.eval()
    env = maze.MazeEnv(1, config=maze.MazeConfig(), demo_settings={"cache_dir": cache})
    demo = env.demo_transitions()
    gen = torch.Generator().manual_seed(0)
    start = maze.BOUNDS[0] + (maze.BOUNDS[1] - maze.BOUNDS[0]) * torch.rand((len(demo), 2), generator=gen)
    step = (torch.rand((len(demo), 2), generator=gen) - 0.5) * 40.0
    random_pairs = torch.cat([start, start + step], dim=1)   # plausible speeds, random places
    for level in (0, 25, 49):
        e_demo = energies(net, rms(demo), level, sigmas)
        e_rand = energies(net, rms(random_pairs), level, sigmas)
        # probability that a demo transition outranks a random one (AUC)
        auc = (e_demo.unsqueeze(1) > e_rand.unsqueeze(0)).float().mean().item()
        assert auc > 0.8, (level, auc)


def test_resume_continues_the_same_curve(tmp_path, cache):
    run_dir = str(tmp_path / "run")
    base = ["task=mazeNEAR", f"run_dir={run_dir}", f"{NCSN}.snapshot_freq=50", f"{NCSN}.eval_freq=50"]
    first = near_train("ncsn", base + [f"{NCSN}.n_iters=120"], cache)
    assert first.returncode == 0, first.stderr[-3000:]
    second = near_train("ncsn", base + [f"{NCSN}.n_iters=220"], cache)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed" in second.stdout and "iterations 121..220" in second.stdout
    assert [s for s, _ in scalars(run_dir)["loss"]] == list(range(1, 221))


def test_sigterm_checkpoints_and_exits_3_then_resumes(tmp_path, cache):
    run_dir = str(tmp_path / "run")
    base = ["task=mazeNEAR", f"run_dir={run_dir}", f"{NCSN}.snapshot_freq=100000", f"{NCSN}.eval_freq=50"]
    code, out = near_train_interrupted("ncsn", base + [f"{NCSN}.n_iters=100000"], cache, marker="ncsn: training",
                                           delay=1.0)
    assert code == 3, out[-3000:]
    stopped = torch.load(os.path.join(run_dir, "nn", "checkpoint.pth"), weights_only=False)["step"]
    assert 0 < stopped < 100000
    assert [s for s, _ in scalars(run_dir)["loss"]] == list(range(1, stopped + 1))
    done = near_train("ncsn", base + [f"{NCSN}.n_iters={stopped + 30}"], cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [s for s, _ in scalars(run_dir)["loss"]] == list(range(1, stopped + 31))


def test_sigusr2_also_interrupts(tmp_path, cache):
    run_dir = str(tmp_path / "run")
    code, out = near_train_interrupted("ncsn", ["task=mazeNEAR", f"run_dir={run_dir}", f"{NCSN}.n_iters=100000"],
                                       cache, marker="ncsn: training", sig=signal.SIGUSR2)
    assert code == 3, out[-3000:]
    assert os.path.isfile(os.path.join(run_dir, "nn", "checkpoint.pth"))


def test_model_variants_masks_and_schedules():
    from near.training.envs import maze
    from near.training.ncsn.model import EMA, EnergyNet, anneal_dsm_loss, sigma_schedule
    from near.training.ncsn.trainer import resolve_feature_mask

    torch.manual_seed(0)
    geometric, uniform = sigma_schedule(20, 0.01, 5, True), sigma_schedule(20, 0.01, 5, False)
    assert torch.allclose(geometric[1:] / geometric[:-1], geometric[1] / geometric[0].expand(4))
    assert torch.allclose(uniform[:-1] - uniform[1:], (uniform[0] - uniform[1]).expand(4))
    env = maze.MazeEnv(1, config=maze.MazeConfig(num_obs_steps=3), demo_settings={"metrics": False})
    assert env.paired_obs_dim == 6
    assert resolve_feature_mask("x", env) == [True, False] * 3
    assert resolve_feature_mask([1], env) == [False, True] * 3
    assert resolve_feature_mask("None", env) is None
    x = torch.randn(64, 6)
    labels = torch.randint(5, (64,))
    for ncsnv2 in (True, False):
        net = EnergyNet(6, [16], 32, [16], 5, ncsnv2=ncsnv2, feature_mask=resolve_feature_mask("x", env))
        loss = anneal_dsm_loss(net, x, labels, geometric)
        loss.backward()
        assert torch.isfinite(loss)
        # masked features (y coordinates) do not change the energy
        y_changed = x.clone()
        y_changed[:, 1::2] += 5.0
        assert torch.allclose(net(x, labels, geometric[labels]), net(y_changed, labels, geometric[labels]))
    ema = EMA(net, rate=0.5)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)
    assert all(torch.allclose(ema.shadow[k], before[k] + 0.5) for k in before)


def test_noise_annealing_and_reward_standardisation():
    """sigma_level=-1 moves to the next (less noisy) level once the policy's mean energy rose by the
    threshold over its value when the level started; a fixed level never moves; both checkpoint."""
    from near.errors import ConfigError
    from near.training.ncsn.reward import NoiseAnnealer, RewardStandardiser

    fixed = NoiseAnnealer(7, 10)
    assert not fixed.update(1e9) and fixed.level == 7
    with pytest.raises(ConfigError, match="sigma_level=10"):
        NoiseAnnealer(10, 10)
    annealer = NoiseAnnealer(-1, 10, progress_threshold=0.02, window=1)
    moved = [annealer.update(e) for e in (100.0, 101.0, 101.9, 102.0, 50.0, 51.5)]
    assert annealer.level == 2 and moved == [False, False, False, True, False, True]  # +2 %, then +3 % one level on
    negative = NoiseAnnealer(-1, 10, window=1)
    # a rise of 2 % of |initial| counts for negative energies too (NEAR's E >= 1.02 E0 would move at once)
    assert [negative.update(e) for e in (-100.0, -99.0, -98.0)] == [False, False, True]
    assert negative.level == 1
    restored = NoiseAnnealer(-1, 10, window=1)
    restored.load_state_dict(annealer.state_dict())
    assert restored.level == annealer.level and restored.state_dict() == annealer.state_dict()
    # non-ncsnv2 models anneal over the first 10 levels only (NEAR)
    assert NoiseAnnealer(-1, 50, ncsnv2=False).levels == list(range(10))

    std = RewardStandardiser()
    e = torch.tensor([[1.0], [21.0]])
    assert torch.allclose(std(e, epoch=1), torch.tanh((e - 11.0) / 10.0))  # offset = mean of this rollout
    std(e + 30.0, epoch=2)                                                  # no refresh at epoch 2
    assert std.offset == pytest.approx(11.0)
    std(e + 60.0, epoch=3)                                                  # refresh: mean of the last 3
    assert std.offset == pytest.approx(41.0)
    again = RewardStandardiser()
    again.load_state_dict(std.state_dict())
    assert torch.allclose(again(e, epoch=4), std(e, epoch=4))
    # a new noise level restarts the offset from its own energies (no stale offset for two epochs)
    std.restart()
    assert torch.allclose(std(5.0 * e, epoch=5), torch.tanh((5.0 * e - 55.0) / 10.0))
    # the non-negative variant is the same transform moved onto [0, 1], order kept
    shifted = RewardStandardiser(nonnegative=True)
    spread = torch.tensor([[-500.0], [1.0], [21.0], [500.0]])
    r = shifted(spread, epoch=1)
    assert torch.allclose(r, (1 + torch.tanh((spread - spread.mean()) / 10.0)) / 2)
    assert r.min() >= 0.0 and r.max() <= 1.0 and torch.all(r[1:] > r[:-1])
