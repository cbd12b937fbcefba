"""Evaluate maze policies: goal reaching and demonstration following.

``evaluate_run(run_dir)`` rebuilds the policy of an ``rl`` run from its ``config.yaml`` and
``nn/checkpoint.pth`` and rolls it out deterministically (the Gaussian's mean) in fresh
maze envs; ``evaluate_random()`` does the same for uniformly random actions. Metrics, over
all finished episodes:

* ``success_rate``: fraction of episodes reaching the goal;
* ``demo_distance``: mean distance (window units) of the agent's states to the nearest
  demonstration state, averaged per episode (lower = closer to the demos);
* ``corridor_rate``: fraction of episodes that travel up the demonstrated left corridor
  (x < 100 while 150 < y < 380);
* ``demo_route_rate``: fraction of episodes that reach the goal along the demonstrated route
  (through the left corridor, then the top corridor 130 < x < 340, y > 400) rather than
  across the open diagonal;
* ``episode_length``: mean steps per episode.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch


def _rollout(env: Any, act: Callable[[torch.Tensor], torch.Tensor], episodes_per_env: int = 2) -> dict[str, float]:
    obs = env.reset()
    n = env.num_envs
    finished = torch.zeros(n, dtype=torch.long)
    in_corridor = torch.zeros(n, dtype=torch.bool)
    in_top = torch.zeros(n, dtype=torch.bool)
    totals = {"success_rate": 0.0, "demo_distance": 0.0, "corridor_rate": 0.0, "demo_route_rate": 0.0,
              "episode_length": 0.0}
    count = 0
    for _ in range(env.max_episode_length * episodes_per_env + 1):
        progress_before = env.progress.clone() + 1
        obs, _, done, infos = env.step(act(obs))
        pos = infos["paired_obs"][:, -2:]
        in_corridor |= (pos[:, 0] < 100) & (pos[:, 1] > 150) & (pos[:, 1] < 380)
        in_top |= in_corridor & (pos[:, 0] > 130) & (pos[:, 0] < 340) & (pos[:, 1] > 400)
        take = done & (finished < episodes_per_env)
        if take.any():
            m = infos["episode_metrics"]
            totals["success_rate"] += m["success_rate"][take].sum().item()
            totals["demo_distance"] += m["demo_distance"][take].sum().item()
            totals["corridor_rate"] += in_corridor[take].float().sum().item()
            totals["demo_route_rate"] += (in_top & (m["success_rate"] > 0))[take].float().sum().item()
            totals["episode_length"] += progress_before[take].float().sum().item()
            count += int(take.sum())
        finished += done.long()
        in_corridor &= ~done
        in_top &= ~done
        if (finished >= episodes_per_env).all():
            break
    return {k: v / max(count, 1) for k, v in totals.items()} | {"episodes": count}


def evaluate_random(task_overrides: list[str] | None = None, num_envs: int = 256, seed: int = 123) -> dict[str, float]:
    """Metrics of uniformly random actions in ``[-1, 1]^2``."""
    from near.training import registry
    from near.training.settings import load_settings

    settings = load_settings(["task=mazePPO", *(task_overrides or [])])
    env = registry.make_env(settings.task, num_envs=num_envs, device="cpu", seed=seed)
    gen = torch.Generator().manual_seed(seed)
    return _rollout(env, lambda obs: torch.rand((obs.shape[0], 2), generator=gen) * 2 - 1)


def evaluate_run(run_dir: str, num_envs: int = 256, seed: int = 123) -> dict[str, float]:
    """Metrics of the deterministic policy saved in ``run_dir`` (an ``rl`` run)."""
    from near.training import registry
    from near.training.eval_metrics import load_policy
    from near.training.settings import read_run_settings

    settings = read_run_settings(os.path.join(run_dir, "config.yaml"))
    env = registry.make_env(settings.task, num_envs=num_envs, device="cpu", seed=seed)
    policy = load_policy(settings, os.path.join(run_dir, "nn", "checkpoint.pth"), env, "cpu")

    def act(obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return policy(obs)

    return _rollout(env, act)
