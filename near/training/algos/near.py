"""NEAR: PPO with the noise-conditioned energy-based annealed reward (rl-games ``near_continuous``).

Per rollout, the trained energy model(s) score every paired observation (``numObsSteps``
consecutive states) at the current noise level; the energies pass through NEAR's reward
standardisation and are mixed with the task reward:
``r = task_reward_w * r_task + energy_reward_w * tanh((E - m) / 10)`` (the energy term on [0, 1]
with ``inference.nonnegative_energy_reward``, see ``ncsn/reward.py``).
With ``inference.sigma_level=-1`` the noise level is annealed (see ``ncsn/reward.py``).

Tensorboard tags (NEAR's names, step = frames): ``minibatch_combined_reward/step``,
``minibatch_shaped_task_reward/step``, ``minibatch_energy_reward/step``,
``minibatch_energy/step``, ``ncsn_perturbation_level/step``.
"""

from __future__ import annotations

from typing import Any

import torch
from rl_games.algos_torch import players, torch_ext

from near.training.algos.ppo import PPOAgent
from near.training.ncsn.reward import EnergyFunction, NoiseAnnealer, RewardStandardiser
from near.training.registry import register_algorithm
from near.training.settings import NEARSettings


class NEARAgent(PPOAgent):
    """PPO whose reward is (partly) the annealed energy of the agent's transitions."""

    def __init__(self, base_name: str, params: dict[str, Any]):
        super().__init__(base_name, params)
        near: NEARSettings = self.config["near_params"].config.near_config
        inference = near.inference
        self.task_reward_w = inference.task_reward_w
        self.energy_reward_w = inference.energy_reward_w
        env = self.vec_env.env
        demos = env.demo_transitions() if isinstance(inference.eb_model_checkpoint, dict) else None
        self.energy = EnergyFunction(
            inference.eb_model_checkpoint, inference.running_mean_std_checkpoint, self.ppo_device,
            env.paired_obs_dim, use_ema=near.model.ema, normalize=near.training.normalize_energynet_input,
            weights=inference.composition_weights, demo_transitions=demos)
        self.annealer = NoiseAnnealer(inference.sigma_level, self.energy.num_levels, ncsnv2=near.model.ncsnv2,
                                      progress_threshold=inference.anneal_progress_threshold,
                                      window=inference.anneal_window)
        self.standardiser = RewardStandardiser(nonnegative=inference.nonnegative_energy_reward)
        meter = lambda: torch_ext.AverageMeter(1, self.games_to_track).to(self.ppo_device)  # noqa: E731
        self.mean_combined_rewards, self.mean_energy_rewards = meter(), meter()
        self.mean_shaped_task_rewards, self.mean_energy = meter(), meter()

    def compute_rewards(self, rollout: dict[str, Any]) -> torch.Tensor:
        paired = rollout["paired_obs"]
        energy = self.energy(paired, self.annealer.level)                      # (H, N, 1)
        mean = float(energy.mean())  # the one host sync of the reward
        if self.annealer.update(mean):
            energy = self.energy(paired, self.annealer.level)
            mean = float(energy.mean())
            self.standardiser.restart()
        energy_reward = self.standardiser(energy, self.epoch_num, mean)
        task = rollout["task_rewards"]
        combined = self.task_reward_w * task + self.energy_reward_w * energy_reward
        # NEAR logs per-env sums over the rollout, averaged over recent rollouts
        self.mean_energy.update(energy.sum(0))
        self.mean_energy_rewards.update(energy_reward.sum(0))
        self.mean_shaped_task_rewards.update(task.sum(0))
        self.mean_combined_rewards.update(combined.sum(0))
        return combined

    def write_extra_stats(self, frame: int, epoch_num: int) -> None:
        if self.mean_combined_rewards.current_size == 0:
            return
        self.writer.add_scalar("minibatch_combined_reward/step", float(self.mean_combined_rewards.get_mean()), frame)
        self.writer.add_scalar("minibatch_shaped_task_reward/step", float(self.mean_shaped_task_rewards.get_mean()), frame)
        self.writer.add_scalar("minibatch_energy_reward/step", float(self.mean_energy_rewards.get_mean()), frame)
        self.writer.add_scalar("minibatch_energy/step", float(self.mean_energy.get_mean()), frame)
        self.writer.add_scalar("ncsn_perturbation_level/step", self.annealer.level, frame)

    def extra_state(self) -> dict[str, Any]:
        meters = {name: self._meter_state(getattr(self, name)) for name in
                  ("mean_combined_rewards", "mean_energy_rewards", "mean_shaped_task_rewards", "mean_energy")}
        return {"annealer": self.annealer.state_dict(), "standardiser": self.standardiser.state_dict(), "meters": meters}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.annealer.load_state_dict(state["annealer"])
        self.standardiser.load_state_dict(state["standardiser"])
        for name, value in state["meters"].items():
            self._load_meter(getattr(self, name), value)


register_algorithm("near_continuous", lambda **kwargs: NEARAgent(**kwargs),
                   lambda **kwargs: players.PpoPlayerContinuous(**kwargs))
