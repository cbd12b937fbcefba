"""Humanoid resets without a host round trip: masked resets on MuJoCo Warp (Warp's CPU device here),
index resets on MuJoCo, the same starts from the same seed; episode metrics a step late."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch

from near.training.envs.humanoid import skeleton as sk
from near.training.envs.humanoid.env import HumanoidEnv, HumanoidEnvConfig

DONE = [1, 4]  # the envs forced to time out


def _warp_or_skip() -> None:
    if not os.environ.get("NEAR_REQUIRE_WARP"):  # `make setup` installs it; a bare venv may not
        pytest.importorskip("mujoco_warp")


def _env(backend: str, n: int = 6, **kw) -> HumanoidEnv:
    cfg = HumanoidEnvConfig(num_envs=n, motion_file="walk", episode_length=10, enable_early_termination=False,
                            backend=backend, **kw)
    return HumanoidEnv(cfg, seed=2)


def _time_out(env: HumanoidEnv, ids: list[int]) -> None:
    env.progress[ids] = env.max_episode_length - 1  # their next step reaches the time limit


def _reference_qpos(env: HumanoidEnv, ids: list[int]) -> torch.Tensor:
    """MuJoCo's qpos of the reference state each env in `ids` starts in, from the motion table."""
    s = env.table.state(env.motion_id[ids], env.start_time[ids])
    rot = s["root_rot"]
    hinges = sk.hinges_from_quats(s["joint_rot"], env.lower, env.upper)
    return torch.cat([s["root_pos"], rot[:, 3:], rot[:, :3], hinges], 1)


def test_masked_resets_start_exactly_the_done_envs_where_index_resets_do():
    _warp_or_skip()
    keep = [i for i in range(6) if i not in DONE]
    a = torch.linspace(-0.3, 0.3, 6 * 28).view(6, 28)
    envs = {b: _env(b) for b in ("mujoco", "mujoco_warp")}
    twins = {b: _env(b) for b in envs}  # the same seed, no env forced to end
    for b, env in envs.items():
        _time_out(env, DONE)
        _, _, done, infos = env.step(a)
        _, _, _, twin_infos = twins[b].step(a)
        assert done.tolist() == [i in DONE for i in range(6)], b
        twin = twins[b]
        # the reset envs start in the reference state at the time they drew, in the simulator too
        assert bool(((env.start_time[DONE] >= 0) & (env.start_time[DONE] < env.table.duration[0])).all())
        assert env.progress[DONE].tolist() == [0, 0]
        assert torch.allclose(env.obs[DONE], env.reference_obs(env.motion_id[DONE], env.start_time[DONE]), atol=1e-5)
        assert torch.allclose(env.history[DONE], env.reference_history(env.motion_id[DONE], env.start_time[DONE]),
                              atol=1e-5)
        assert torch.allclose(env.sim.read()[0][DONE], _reference_qpos(env, DONE), atol=1e-5), b
        # the others are untouched: exactly the twin's
        for name in ("obs", "history", "motion_id", "start_time", "progress", "prev_root_x"):
            assert torch.equal(getattr(env, name)[keep], getattr(twin, name)[keep]), (b, name)
        assert torch.equal(env.sim.read()[0][keep], twin.sim.read()[0][keep]) and torch.equal(
            env.sim.read()[1][keep], twin.sim.read()[1][keep])
        # paired_obs is the state the step reached, also where the env was reset afterwards
        assert torch.equal(infos["paired_obs"], twin_infos["paired_obs"]), b
        # the next step settles the new episodes' reference poses from the start they drew
        env.step(torch.zeros(6, 28))
        steps = env.max_episode_length + 1
        t = env.start_time[DONE, None] + torch.arange(steps) * env.dt
        ref = env.table.body_positions(env.motion_id[DONE, None].expand(-1, steps), t)
        assert torch.allclose(env.ref_pose[DONE], (ref - ref[..., :1, :]).flatten(-2), atol=1e-6)
    # every env draws at every reset, so the random stream is the same on both simulators
    cpu, warp = envs["mujoco"], envs["mujoco_warp"]
    assert torch.equal(cpu.start_time, warp.start_time) and torch.equal(cpu.motion_id, warp.motion_id)


def _near_dtw(x: np.ndarray, y: np.ndarray) -> float:
    """NEAR's DTW pose error, written out: the least summed squared frame distance along a warping
    path, square-rooted, over the 15 bodies."""
    cost = ((x[:, None] - y[None]) ** 2).sum(-1)
    acc = np.full((len(x) + 1, len(y) + 1), math.inf)
    acc[0, 0] = 0.0
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    return math.sqrt(acc[-1, -1]) / 15


@pytest.mark.parametrize("backend", ["mujoco", "mujoco_warp"])
def test_episode_metrics_come_with_the_next_step_or_a_flush_and_describe_the_episode(backend):
    if backend == "mujoco_warp":
        _warp_or_skip()
    env, twin = _env(backend, n=3), _env(backend, n=3)
    steps = env.max_episode_length
    times = env.start_time[:, None] + torch.arange(steps + 1) * env.dt
    start = env.table.body_positions(env.motion_id[:, None], times)  # the reference over the episode
    poses = [env.table.body_positions(env.motion_id, env.start_time)]  # each episode starts in its reference
    sim_state = env._sim_state

    def record():  # the body positions each step reached (the simulator's are the reset's after the last)
        obs, xpos, touch = sim_state()
        poses.append(xpos)
        return obs, xpos, touch

    env._sim_state = record
    gen = torch.Generator().manual_seed(0)
    for k in range(steps):
        a = torch.rand(3, 28, generator=gen) * 0.6 - 0.3
        _, _, done, infos = env.step(a)
        twin.step(a)
        assert "episode_metrics" not in infos  # none ended before
    assert bool(done.all())
    _, _, _, infos = env.step(torch.zeros(3, 28))
    poses.pop()
    assert infos["episode_ended"].tolist() == [True, True, True]
    late = infos["episode_metrics"]
    flushed, ended = twin.flush_episode_metrics()
    assert bool(ended.all()) and all(torch.equal(flushed[k], late[k]) for k in late)
    path = torch.stack(poses, 1)  # (3, steps + 1, 15, 3)
    rel = lambda p: (p - p[..., :1, :]).flatten(-2).double().numpy()  # noqa: E731
    for i in range(3):
        assert late["mean_dtw_pose_error"][i] == pytest.approx(_near_dtw(rel(path[i]), rel(start[i])), rel=1e-4)
        speed = (path[i, 1:, 0] - path[i, :-1, 0]).double().norm(dim=-1).mean() / env.dt
        assert late["root_velocity"][i] == pytest.approx(float(speed), rel=1e-4)


def test_a_warp_step_reads_nothing_back_but_the_last_resets():
    """On MuJoCo Warp a step never makes the host read a device value, except where it settles the
    previous step's resets (their indices, copied at that step: on a GPU done by then)."""
    _warp_or_skip()
    from torch.utils._python_dispatch import TorchDispatchMode

    reads = []

    class HostReads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            bool_index = name.startswith("index") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 and
                                                                               isinstance(args[1], (list, tuple)) else []))
            if name in ("_local_scalar_dense", "nonzero", "masked_select", "item") or bool_index:
                frame, where = sys._getframe(1), []
                while frame is not None:
                    where.append(frame.f_code.co_name)
                    frame = frame.f_back
                if "_settle" not in where:
                    reads.append((name, where[:6]))
            return func(*args, **(kwargs or {}))

    env = _env("mujoco_warp", n=4)
    _time_out(env, [0, 2])
    with HostReads():
        for _ in range(3):
            env.step(torch.zeros(4, 28))
    assert reads == []


def test_rollout_metrics_counts_the_episodes_of_the_last_step():
    from near.training.eval_metrics import rollout_metrics

    env = _env("mujoco", n=4)
    out = rollout_metrics(env, lambda obs: torch.zeros(obs.shape[0], 28), episodes=4)
    # every episode ends at the last step: its metrics come from the flush
    assert out["episodes"] == 4 and out["episode_length"] == 10.0
    assert math.isfinite(out["mean_dtw_pose_error"]) and out["diverged_episodes"] == 0


def test_a_checkpoint_between_an_episode_end_and_its_report_keeps_the_report():
    env, other = _env("mujoco", n=2), _env("mujoco", n=2, state_init="Start")
    for _ in range(env.max_episode_length):
        env.step(torch.zeros(2, 28))
    other.load_state_dict(env.state_dict())  # the episodes ended; their metrics are not yet reported
    _, _, _, expected = env.step(torch.zeros(2, 28))
    _, _, _, resumed = other.step(torch.zeros(2, 28))
    assert expected["episode_ended"].tolist() == resumed["episode_ended"].tolist() == [True, True]
    assert all(torch.equal(expected["episode_metrics"][k], resumed["episode_metrics"][k])
               for k in expected["episode_metrics"])
    assert torch.equal(env.obs, other.obs) and torch.equal(env.dtw_sq, other.dtw_sq)
