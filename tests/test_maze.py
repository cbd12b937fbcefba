"""The vectorized maze and its scripted-planner demonstrations (CPU, one thread)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from near.training import demos
from near.training.envs import maze

torch.set_num_threads(1)


def _env(n=32, seed=0, tmp_path=None, **kwargs):
    return maze.MazeEnv(n, device="cpu", seed=seed, config=maze.MazeConfig(**kwargs),
                        demo_settings={"cache_dir": str(tmp_path) if tmp_path else None})


def test_walls_stop_the_agent(tmp_path):
    env = _env(8, tmp_path=tmp_path)
    env.reset()
    # aim far to the upper-left: the agent must not cross the left corridor wall (x in 20..40 + radius)
    for _ in range(30):
        env.step(torch.tensor([[-1.0, 0.2]]).repeat(8, 1))
        inside = [((env.pos[:, 0] > x0 - maze.AGENT_RADIUS + 1) & (env.pos[:, 0] < x1 + maze.AGENT_RADIUS - 1)
                   & (env.pos[:, 1] > y0 - maze.AGENT_RADIUS + 1) & (env.pos[:, 1] < y1 + maze.AGENT_RADIUS - 1))
                  for x0, y0, x1, y1 in maze.WALLS]
        assert not torch.stack(inside).any()
        assert (env.pos >= maze.BOUNDS[0]).all() and (env.pos <= maze.BOUNDS[1]).all()


def test_step_contract_and_goal(tmp_path):
    env = _env(4, tmp_path=tmp_path, max_episode_length=5)
    obs = env.reset()
    assert obs.shape == (4, env.obs_dim)
    for t in range(5):
        obs, rew, done, infos = env.step(torch.zeros(4, 2))
        assert infos["paired_obs"].shape == (4, env.paired_obs_dim)
        assert rew.shape == (4,) and done.dtype == torch.bool
    # fifth step: every episode times out and restarts in the start area
    assert done.all() and infos["time_outs"].all()
    assert (env.progress == 0).all() and ((env.pos >= 60) & (env.pos <= 80)).all()
    # an agent placed next to the goal reaches it, is rewarded and reset
    env.reset()
    env.pos[:] = env.goal - 40.0
    env.history[:] = env.pos.unsqueeze(1)
    target = (env.goal / (maze.WINDOW / 2) - 1.0).expand(4, 2)
    rewards = torch.zeros(4)
    for _ in range(5):
        _, rew, done, infos = env.step(target)
        rewards += rew
    assert (rewards == env.cfg.goal_reward).all()
    assert infos["episode_metrics"]["success_rate"].shape == (4,)


def test_demos_follow_the_corridor_to_the_goal(tmp_path):
    env = _env(2, tmp_path=tmp_path)
    trajs = env.demo_states()
    assert len(trajs) == 64
    for traj in trajs:
        assert (traj[-1] - env.goal).norm() < maze.GOAL_RADIUS          # each demo reaches the goal
        left = traj[(traj[:, 1] > 150) & (traj[:, 1] < 380)]
        assert len(left) > 5 and (left[:, 0] < 100).all()               # ... through the left corridor
    pairs = env.demo_transitions()
    assert pairs.shape[1] == 4 and len(pairs) == sum(len(t) - 1 for t in trajs)
    # consecutive states, oldest first, in the same layout as infos['paired_obs']
    assert torch.equal(pairs[0], torch.cat([trajs[0][0], trajs[0][1]]))


def test_demo_file_format_and_cache(tmp_path):
    cfg = maze.MazeConfig()
    path = demos.demo_path(cfg, 8, 3, str(tmp_path))
    assert not os.path.exists(path)
    flat = demos.load_or_generate(maze.MazeEnv, cfg, 8, 3, str(tmp_path))            # generated on first use
    assert os.path.isfile(path)
    with np.load(path) as data:
        assert data["states"].dtype == np.float32 and data["states"].shape[1] == 2
        assert data["episode_ends"][-1] == len(data["states"])
        assert json.loads(str(data["meta"]))["planner"] == demos.PLANNER
    os.utime(path, (1, 1))
    again = demos.load_or_generate(maze.MazeEnv, cfg, 8, 3, str(tmp_path))           # read back, not regenerated
    assert os.stat(path).st_mtime == 1 and torch.equal(flat, again)
    # a different dynamics setting is a different cache entry
    assert demos.demo_path(maze.MazeConfig(kp=12.0), 8, 3, str(tmp_path)) != path
    with open(path, "wb") as fh:
        fh.write(b"not a demo file")
    with pytest.raises(Exception, match="demo file"):
        demos.load_demos(path)


def test_state_dict_continues_exactly(tmp_path):
    a = _env(16, seed=5, tmp_path=tmp_path, max_episode_length=7)
    a.reset()
    gen = torch.Generator().manual_seed(1)
    actions = [torch.rand((16, 2), generator=gen) * 2 - 1 for _ in range(20)]
    for act in actions[:9]:
        a.step(act)
    state = a.state_dict()
    rest_a = [a.step(act) for act in actions[9:]]
    b = _env(16, seed=99, tmp_path=tmp_path, max_episode_length=7)
    b.reset()
    b.load_state_dict(state)
    rest_b = [b.step(act) for act in actions[9:]]
    for (oa, ra, da, ia), (ob, rb, db, ib) in zip(rest_a, rest_b):
        assert torch.equal(oa, ob) and torch.equal(ra, rb) and torch.equal(da, db)
        assert torch.equal(ia["paired_obs"], ib["paired_obs"])
