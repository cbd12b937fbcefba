"""NEAR's 2-D maze as a vectorized PyTorch environment.

A point agent (a disc of radius 15) moves in a 512 x 512 window under PD position control:
each action in ``[-1, 1]^2`` is an absolute target position in the window, tracked for
``actionTime`` seconds by ``acc = kp (target - pos) - kv vel`` (semi-implicit Euler,
``substeps`` per step, speed clamped to ``maxSpeed``). Four wall blocks form NEAR's maze: a
corridor from the start area up the left side and along the top leads to the goal, while an
open diagonal path is also free. The agent starts uniformly in ``[60, 80]^2``; the goal is at
``0.85 * 512`` on both axes and counts as reached within 5 % of the goal's norm (NEAR's
``dist_to_goal < 0.05``). Task reward: ``goalReward`` when reaching the goal (the episode
ends), else ``stepReward``; episodes also end after ``maxEpisodeLength`` steps (a time-out).

Observations for the policy: position scaled to ``[-1, 1]`` and velocity / ``maxSpeed``.
Paired observations (energy model / discriminator input): the last ``numObsSteps`` positions
in window units, oldest first. Expert demonstrations come from :mod:`near.training.demos`.

Geometry and units follow NEAR's pymunk maze (``custom_envs/maze_env.py``); the physics is
our own batched re-implementation (axis-aligned walls, push-out collisions).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from near.training import demos
from near.training.envs.base import VecEnv
from near.training.registry import register_env
from near.training.settings import MazeConfig, MazeTask

WINDOW = 512.0
AGENT_RADIUS = 15.0
#: free region of the agent's centre inside the outer walls (segments at 5 and 506, radius 2)
BOUNDS = (7.0 + AGENT_RADIUS, 504.0 - AGENT_RADIUS)
#: maze wall blocks (x0, y0, x1, y1), window units
WALLS = (
    (20.0, 140.0, 40.0, 460.0),
    (100.0, 140.0, 120.0, 380.0),
    (20.0, 460.0, 350.0, 480.0),
    (100.0, 380.0, 350.0, 400.0),
)
GOAL = (0.85 * WINDOW, 0.85 * WINDOW)
GOAL_RADIUS = 0.05 * math.hypot(*GOAL)
START_LOW, START_HIGH = 60.0, 80.0


def _physics(pos, vel, target, walls_lo, walls_hi, kp: float, kv: float, dt: float, max_speed: float,
             substeps: int, lo: float, hi: float):
    """Advance positions/velocities (N, 2) by ``substeps`` PD-controlled Euler steps with walls."""
    for _ in range(substeps):
        acc = kp * (target - pos) - kv * vel
        vel = vel + acc * dt
        speed = vel.norm(dim=-1, keepdim=True)
        vel = vel * torch.clamp(max_speed / (speed + 1e-6), max=1.0)
        pos = pos + vel * dt
        # walls: push the disc's centre out of every (radius-expanded) block along the shallowest axis
        p = pos.unsqueeze(1)                                   # (N, 1, 2)
        pen_lo = p - walls_lo                                  # distance past the low faces (N, R, 2)
        pen_hi = walls_hi - p                                  # distance before the high faces
        inside = (pen_lo > 0).all(-1) & (pen_hi > 0).all(-1)  # (N, R)
        pen = torch.cat([pen_lo, pen_hi], dim=-1)              # (N, R, 4): -x, -y, +x, +y exits
        depth, face = pen.min(dim=-1)
        depth = depth * inside
        axis = face % 2                                        # 0: x, 1: y
        sign = torch.where(face < 2, -1.0, 1.0)
        push = torch.stack([(axis == 0) * sign * depth, (axis == 1) * sign * depth], dim=-1).sum(1)
        hit = push != 0
        pos = pos + push
        vel = torch.where(hit, torch.zeros_like(vel), vel)
        # outer walls
        out = (pos < lo) | (pos > hi)
        pos = pos.clamp(lo, hi)
        vel = torch.where(out, torch.zeros_like(vel), vel)
    return pos, vel


class MazeEnv(VecEnv):
    """``num_envs`` mazes stepped together on ``device``."""

    WINDOW = WINDOW
    obs_per_step = 2
    action_dim = 2
    obs_dim = 4

    def __init__(self, num_envs: int, device: str = "cpu", seed: int = 0, config: MazeConfig | None = None,
                 demo_settings: dict[str, Any] | None = None):
        self.cfg = config or MazeConfig()
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.num_obs_steps = self.cfg.num_obs_steps
        self.max_episode_length = self.cfg.max_episode_length
        self.dt = self.cfg.action_time
        self.demo_settings = dict(demo_settings or {})
        dev = self.device
        self.generator = torch.Generator(device=dev)
        self.generator.manual_seed(int(seed) & 0x7FFFFFFF)
        walls = torch.tensor(WALLS, device=dev)
        self.walls_lo = (walls[:, :2] - AGENT_RADIUS).unsqueeze(0)
        self.walls_hi = (walls[:, 2:] + AGENT_RADIUS).unsqueeze(0)
        self.goal = torch.tensor(GOAL, device=dev)
        n = self.num_envs
        self.pos = torch.zeros((n, 2), device=dev)
        self.vel = torch.zeros((n, 2), device=dev)
        self.progress = torch.zeros(n, dtype=torch.long, device=dev)
        self.history = torch.zeros((n, self.num_obs_steps, 2), device=dev)
        self.demo_dist_sum = torch.zeros(n, device=dev)
        self._demos: torch.Tensor | None = None
        self._demo_grid: torch.Tensor | None = None
        self._physics = _physics
        use_compile = self.cfg.compile
        if use_compile == "auto":
            use_compile = self.device.type == "cuda"
        if use_compile:
            self._physics = self._compiled_with_fallback(torch.compile(_physics, dynamic=False))

    def _compiled_with_fallback(self, compiled):
        """Use the compiled physics; fall back to eager if compilation fails on this machine."""
        def physics(*args):
            try:
                return compiled(*args)
            except Exception as err:  # e.g. no C compiler / triton for this device
                print(f"near: torch.compile of the maze physics failed ({type(err).__name__}); running eager",
                      flush=True)
                self._physics = _physics
                return _physics(*args)
        return physics

    # ------------------------------------------------------------------ demos
    def demo_states(self) -> list[torch.Tensor]:
        """Expert trajectories (list of (T_i, 2) position tensors), generated on first use."""
        if self._demos is None:
            keys = ("num_demos", "seed", "cache_dir")
            self._demos = demos.load_or_generate(type(self), self.cfg, **{k: self.demo_settings[k] for k in keys
                                                               if k in self.demo_settings})
        return demos.split_episodes(self._demos)

    def demo_transitions(self) -> torch.Tensor:
        """Every window of ``num_obs_steps`` consecutive demo positions, oldest first (M, 2k)."""
        k = self.num_obs_steps
        rows = [traj.unfold(0, k, 1).transpose(1, 2).reshape(-1, 2 * k) for traj in self.demo_states() if len(traj) >= k]
        return torch.cat(rows).to(self.device)

    def _demo_distance_grid(self, cell: float = 8.0) -> torch.Tensor:
        """Distance from each grid cell centre to the nearest demo state (lookup table)."""
        if self._demo_grid is None:
            states = torch.cat(self.demo_states()).to(self.device)
            m = int(WINDOW // cell)
            centres = (torch.arange(m, device=self.device, dtype=torch.float32) + 0.5) * cell
            grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 2)
            best = torch.full((grid.shape[0],), float("inf"), device=self.device)
            for chunk in states.split(4096):
                best = torch.minimum(best, torch.cdist(grid, chunk).min(dim=1).values)
            self._demo_grid = best.reshape(m, m)
            self._grid_cell = cell
        return self._demo_grid

    def demo_distance(self, pos: torch.Tensor) -> torch.Tensor:
        """Approximate distance (window units) of positions (N, 2) to the nearest demo state."""
        grid = self._demo_distance_grid()
        idx = (pos / self._grid_cell).long().clamp(0, grid.shape[0] - 1)
        return grid[idx[:, 0], idx[:, 1]]

    # ------------------------------------------------------------------ dynamics
    def _start_positions(self) -> torch.Tensor:
        u = torch.rand((self.num_envs, 2), generator=self.generator, device=self.device)
        return START_LOW + (START_HIGH - START_LOW) * u

    def observations(self) -> torch.Tensor:
        return torch.cat([self.pos / (WINDOW / 2) - 1.0, self.vel / self.cfg.max_speed], dim=-1)

    def reset(self) -> torch.Tensor:
        start = self._start_positions()
        self.pos = start
        self.vel = torch.zeros_like(start)
        self.progress.zero_()
        self.history = start.unsqueeze(1).repeat(1, self.num_obs_steps, 1)
        self.demo_dist_sum.zero_()
        return self.observations()

    def step(self, actions: torch.Tensor):
        cfg = self.cfg
        target = (actions.to(self.device, torch.float32).clamp(-1.0, 1.0) + 1.0) * (WINDOW / 2)
        self.pos, self.vel = self._physics(self.pos, self.vel, target, self.walls_lo, self.walls_hi, cfg.kp, cfg.kv,
                                           cfg.action_time / cfg.substeps, cfg.max_speed, cfg.substeps,
                                           BOUNDS[0], BOUNDS[1])
        self.progress += 1
        self.history = torch.cat([self.history[:, 1:], self.pos.unsqueeze(1)], dim=1)
        paired = self.history.reshape(self.num_envs, -1)

        goal_dist = (self.pos - self.goal).norm(dim=-1)
        success = goal_dist < GOAL_RADIUS
        time_out = (self.progress >= self.max_episode_length) & ~success
        done = success | time_out
        reward = torch.where(success, cfg.goal_reward, cfg.step_reward)

        metrics: dict[str, torch.Tensor] = {"success_rate": success.float(), "goal_distance": goal_dist}
        if self.demo_settings.get("metrics", True):
            self.demo_dist_sum += self.demo_distance(self.pos)
            metrics["demo_distance"] = self.demo_dist_sum / self.progress.float()

        # auto-reset finished episodes (masks, no host sync)
        start = self._start_positions()
        d = done.unsqueeze(-1)
        self.pos = torch.where(d, start, self.pos)
        self.vel = torch.where(d, torch.zeros_like(self.vel), self.vel)
        self.progress = torch.where(done, torch.zeros_like(self.progress), self.progress)
        self.history = torch.where(d.unsqueeze(-1), start.unsqueeze(1).expand_as(self.history), self.history)
        self.demo_dist_sum = torch.where(done, torch.zeros_like(self.demo_dist_sum), self.demo_dist_sum)

        infos = {"paired_obs": paired, "time_outs": time_out.float(), "episode_metrics": metrics}
        return self.observations(), reward, done, infos

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "pos": self.pos.clone(), "vel": self.vel.clone(), "progress": self.progress.clone(),
            "history": self.history.clone(), "demo_dist_sum": self.demo_dist_sum.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = self.device
        if state["pos"].shape[0] != self.num_envs:
            from near.errors import ConfigError

            raise ConfigError(f"the checkpoint has {state['pos'].shape[0]} maze envs, this run has {self.num_envs} "
                              "(num_envs must stay the same when resuming)")
        self.pos = state["pos"].to(dev)
        self.vel = state["vel"].to(dev)
        self.progress = state["progress"].to(dev)
        self.history = state["history"].to(dev)
        self.demo_dist_sum = state["demo_dist_sum"].to(dev)
        self.generator.set_state(state["generator"].cpu())

    def feature_mask(self, name: str | None) -> torch.Tensor | None:
        """Named masks over paired features: ``x`` / ``y`` keep one axis of every state."""
        if name in (None, "", "None"):
            return None
        if name in ("x", "y"):
            keep = 0 if name == "x" else 1
            return torch.tensor([i % 2 == keep for i in range(self.paired_obs_dim)], dtype=torch.bool)
        return super().feature_mask(name)


def make_maze_env(task: MazeTask, num_envs: int, device: str, seed: int) -> MazeEnv:
    """Registry factory: build a :class:`MazeEnv` from the maze task's settings."""
    demo = task.env.demos
    settings = {"num_demos": demo.num, "seed": demo.seed, "cache_dir": demo.cache_dir or None}
    return MazeEnv(num_envs, device=device, seed=seed, config=task.env, demo_settings=settings)


register_env("maze", make_maze_env)
