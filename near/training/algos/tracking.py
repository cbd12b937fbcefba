"""DeepMimic-style motion tracking (Peng et al., 2018) on near's PPO.

The reward compares the state the character reached with the reference frame that the phase
variable selects for that step, through exponential kernels of the tracking errors:

    r_track = prod_i exp(-k_i * e_i) ** w_i        (combine: product, default)
    r_track = sum_i w_i * exp(-k_i * e_i) / sum_i w_i   (combine: sum, DeepMimic's weighted sum)

with e_i the squared error of feature group i. The groups come from the environment
(``tracking_groups``): on the motion env ``pose`` (root position), ``velocity`` (root and end
point velocities) and ``end`` (end point position); elsewhere one ``pose`` group of all state
features. PPO maximises ``task_reward_w * task + tracking_reward_w * r_track``.

Where the environment provides the reference (``infos['reference']``, the motion env: phase
variable, reference state initialisation and early termination when the root strays more
than ``terminationDistance`` from the reference, set in cfg/task/motionTrack.yaml), that frame
is the target. Environments without a phase variable (the maze) are tracked against their first
demonstration trajectory (``demo_states()[0]``, else the rows of ``demo_transitions()``), indexed
by the step count since the episode started (a time-indexed phase) and held at its last frame;
they keep their own initial state and termination.

Config (``params.config.tracking_config``): ``task_reward_w``, ``tracking_reward_w``,
``combine``, ``weights: {group: w}``, ``scales: {group: k}``.
Tensorboard tags: ``minibatch_tracking_reward/step``, ``minibatch_combined_reward/step``,
``minibatch_shaped_task_reward/step``, ``info/tracking_error_<group>`` (plus the PPO base's).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from rl_games.algos_torch import players

from near.errors import ConfigError
from near.training.algos.ppo import PPOAgent
from near.training.registry import register_algorithm
from near.training.settings import TrackingSettings

#: feature groups with a declared default scale (not every env has all of them)
DEFAULT_SCALES = TrackingSettings().scales


def tracking_errors(state: torch.Tensor, ref: torch.Tensor, groups: Mapping[str, list[int]]) -> dict[str, torch.Tensor]:
    """Squared error of each feature group between `state` and `ref` (..., D) -> {group: (...)}."""
    return {name: (state[..., idx] - ref[..., idx]).pow(2).sum(-1) for name, idx in groups.items()}


def tracking_reward(
    errors: Mapping[str, torch.Tensor],
    scales: Mapping[str, float],
    weights: Mapping[str, float] | None = None,
    combine: str = "product",
) -> torch.Tensor:
    """Combine exponential kernels exp(-k * e) of the per-group errors into a reward in [0, 1]."""
    weights = weights or {}
    kernels = {name: torch.exp(-float(scales.get(name, 1.0)) * e) for name, e in errors.items()}
    if combine == "product":
        out = None
        for name, k in kernels.items():
            term = k ** float(weights.get(name, 1.0))
            out = term if out is None else out * term
        return out
    if combine == "sum":
        total = sum(float(weights.get(name, 1.0)) for name in kernels)
        return sum(float(weights.get(name, 1.0)) * k for name, k in kernels.items()) / total
    raise ConfigError(f"tracking_config.combine must be 'product' or 'sum', got {combine!r}")


class TrackingAgent(PPOAgent):
    """PPO on a DeepMimic-style tracking reward (optionally mixed with the task reward)."""

    def __init__(self, base_name: str, params: dict[str, Any]):
        super().__init__(base_name, params)
        tcfg: TrackingSettings = params["config"]["near_params"].config.tracking_config
        env = self.vec_env.env
        self.obs_per_step = int(env.obs_per_step)
        self.task_reward_w = tcfg.task_reward_w
        self.tracking_reward_w = tcfg.tracking_reward_w
        self.combine = tcfg.combine
        groups = getattr(env, "tracking_groups", None) or {"pose": list(range(self.obs_per_step))}
        self.groups = {k: list(v) for k, v in groups.items()}
        self.scales = dict(tcfg.scales)
        self.weights = dict(tcfg.weights)
        unknown = (set(self.scales) | set(self.weights)) - set(self.groups) - set(DEFAULT_SCALES)
        if unknown:
            raise ConfigError(f"tracking_config names unknown feature groups {sorted(unknown)}; "
                              f"this environment has {sorted(self.groups)}")
        tracking_reward({}, {}, combine=self.combine)  # validate 'combine' now, not after a rollout
        # time-indexed fallback reference for envs without a phase variable
        self.use_fallback = not hasattr(env, "reference_state")
        self.demo_track: torch.Tensor | None = None
        self.steps_in_episode: torch.Tensor | None = None
        self._refs: torch.Tensor | None = None
        self._n = 0
        self._stats: dict[str, float] = {}

    def _fallback_reference(self) -> torch.Tensor:
        env = self.vec_env.env
        if self.demo_track is None:
            if hasattr(env, "demo_states"):  # the maze: a list of demonstration trajectories
                track = env.demo_states()[0]
            else:
                rows = env.demo_transitions()
                track = rows[:, -self.obs_per_step:]  # consecutive rows of one demonstration
            self.demo_track = torch.as_tensor(track, dtype=torch.float32, device=self.ppo_device)
        if self.steps_in_episode is None:
            self.steps_in_episode = torch.zeros(env.num_envs, dtype=torch.long, device=self.ppo_device)
        idx = (self.steps_in_episode + 1).clamp(max=self.demo_track.shape[0] - 1)
        return self.demo_track[idx]

    def env_step(self, actions):
        fallback = None
        if self._rollout is not None:
            env = self.vec_env.env
            if self._refs is None or self._refs.shape[0] != self.horizon_length:
                self._refs = torch.zeros(self.horizon_length, env.num_envs, self.obs_per_step, device=self.ppo_device)
            if self.use_fallback:
                fallback = self._fallback_reference()
            n = self._rollout["n"]
        obs, rewards, dones, infos = super().env_step(actions)
        if self._rollout is not None:
            ref = infos.get("reference")
            self._refs[n] = ref if ref is not None else fallback
        if self.steps_in_episode is not None:
            self.steps_in_episode = (self.steps_in_episode + 1) * (~dones.bool()).long()
        return obs, rewards, dones, infos

    def compute_rewards(self, rollout: dict[str, Any]) -> torch.Tensor:
        state = rollout["paired_obs"][..., -self.obs_per_step:]
        errors = tracking_errors(state, self._refs, self.groups)
        track = tracking_reward(errors, self.scales, self.weights, self.combine).unsqueeze(-1)
        task = rollout["task_rewards"]
        combined = self.task_reward_w * task + self.tracking_reward_w * track
        self._stats = {"tracking": float(track.mean()), "combined": float(combined.mean()), "task": float(task.mean()),
                       **{f"tracking_error_{k}": float(v.mean()) for k, v in errors.items()}}
        return combined

    def write_extra_stats(self, frame: int, epoch_num: int) -> None:
        s = self._stats
        if not s:
            return
        self.writer.add_scalar("minibatch_tracking_reward/step", s["tracking"], frame)
        self.writer.add_scalar("minibatch_combined_reward/step", s["combined"], frame)
        self.writer.add_scalar("minibatch_shaped_task_reward/step", s["task"], frame)
        for k, v in s.items():
            if k.startswith("tracking_error_"):
                self.writer.add_scalar(f"info/{k}", v, frame)

    def extra_state(self) -> dict[str, Any]:
        return {"steps_in_episode": self.steps_in_episode}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("steps_in_episode") is not None:
            self.steps_in_episode = state["steps_in_episode"].to(self.ppo_device)


register_algorithm("track_continuous", lambda **kwargs: TrackingAgent(**kwargs),
                   lambda **kwargs: players.PpoPlayerContinuous(**kwargs))
