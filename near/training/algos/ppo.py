"""rl-games' continuous PPO with near's run loop (the base of every near RL algorithm).

:class:`PPOAgent` subclasses ``rl_games.algos_torch.a2c_continuous.A2CAgent`` and keeps its
rollout, losses and optimiser. It replaces ``train()`` by a loop that

* checkpoints everything needed to continue exactly (networks, optimiser, normalisers,
  counters, env state, the agent's current observation and episode accumulators, every RNG,
  plus :meth:`PPOAgent.extra_state` of subclasses) into ``<run_dir>/nn/checkpoint.pth``
  every ``save_frequency`` epochs, at the end, and on SIGTERM/SIGUSR2;
* resumes from that file (the entry point truncates newer tensorboard events first);
* after each rollout, recomputes rewards through :meth:`PPOAgent.compute_rewards` (a hook:
  task reward here, NEAR's energy reward, AMP's discriminator reward, ...), then the GAE
  returns;
* logs rl-games' own tags (``losses/a_loss``, ``rewards/step``, ``episode_lengths/step``,
  ``performance/*``, ...) plus per-episode task metrics (``success_rate/step``, ...).

Subclass hooks: :meth:`compute_rewards`, :meth:`extra_state`, :meth:`load_extra_state`,
:meth:`write_extra_stats`. The rollout of the last epoch is in ``self.last_rollout``
(``task_rewards`` (H,N,1), ``paired_obs`` (H,N,D), ``time_outs`` (H,N)); ``batch_dict``
gains ``paired_obs`` flattened to (H*N, D) for algorithms that train on it (AMP).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
import torch
from rl_games.algos_torch import a2c_continuous, models, players, torch_ext
from rl_games.common import a2c_common

from near.training import runtime
from near.training.registry import register_algorithm

CHECKPOINT_NAME = "checkpoint.pth"


class EpisodeMeter:
    """rl-games' ``AverageMeter`` (the mean of about the last `window` values) fed a (N,) tensor and
    a (N,) mask of the values that count (the episodes ending now). AverageMeter takes only the
    selected values, whose number the host must read back from the GPU at every step; here the
    count stays on the device. With ``rows`` > 1 it is that many meters updated together from
    (rows, N) values and masks (one set of kernels for every episode metric)."""

    def __init__(self, window: int, device: torch.device | str, rows: int = 1):
        self.window = window
        self.mean = torch.zeros(rows, device=device)
        self._size = torch.zeros(rows, device=device)

    @property
    def current_size(self) -> torch.Tensor:
        return self._size

    @current_size.setter
    def current_size(self, value) -> None:
        self._size = torch.as_tensor(value, dtype=torch.float32).to(self.mean.device)

    def update(self, values: torch.Tensor, mask: torch.Tensor) -> None:
        count = mask.sum(-1)
        new_mean = torch.where(mask, values, 0.0).sum(-1) / count.clamp(min=1)
        size = count.clamp(max=self.window)
        old = torch.minimum(self.window - size, self._size)
        total = old + size
        self.mean = torch.where(total > 0, (self.mean * old + new_mean * size) / total.clamp(min=1), self.mean)
        self._size = total

    def get_mean(self):
        return self.mean.squeeze(0).cpu().numpy()


class PPOAgent(a2c_continuous.A2CAgent):
    """Continuous PPO on the task reward, with checkpoints, exact resume and signal handling."""

    def __init__(self, base_name: str, params: dict[str, Any]):
        super().__init__(base_name, params)
        config = params["config"]
        self.stop: runtime.StopRequest = config.get("near_stop") or runtime.StopRequest()
        self.resume_from: str | None = config.get("near_resume_from")
        self.run_result: dict[str, Any] = config.setdefault("near_result", {})
        self.checkpoint_path = os.path.join(self.nn_dir, CHECKPOINT_NAME)
        # rl-games' AverageMeters take the finished episodes by index, a host sync per step
        self.game_rewards = EpisodeMeter(self.games_to_track, self.ppo_device, rows=self.value_size)
        self.game_shaped_rewards = EpisodeMeter(self.games_to_track, self.ppo_device, rows=self.value_size)
        self.game_lengths = EpisodeMeter(self.games_to_track, self.ppo_device)
        #: the per-episode task metrics' names, in the rows of ``episode_meter``
        self.episode_names: list[str] = []
        self.episode_meter: EpisodeMeter | None = None
        self._rollout: dict[str, Any] | None = None
        self.last_rollout: dict[str, Any] | None = None
        self.total_time = 0.0

    # ------------------------------------------------------------------ rollout
    def env_step(self, actions):
        obs, rewards, dones, infos = super().env_step(actions)
        rec = self._rollout
        if rec is not None:
            n = rec["n"]
            rec["task_rewards"][n] = rewards
            rec["paired_obs"][n] = infos["paired_obs"]
            rec["time_outs"][n] = infos.get("time_outs", rec["time_outs"][n]).float()
            rec["n"] = n + 1
        if infos.get("episode_metrics"):
            # an env may report its episodes a step after they ended, marking them in episode_ended
            self._update_episode_meter(infos["episode_metrics"], infos.get("episode_ended", dones).bool())
        return obs, rewards, dones, infos

    def _update_episode_meter(self, metrics: dict[str, torch.Tensor], ended: torch.Tensor) -> None:
        """Feed the metrics of the episodes ending where `ended` (N,) into their meters."""
        if any(name not in self.episode_names for name in metrics):
            self._load_episode_meter({**self._episode_meter_state(), **{name: (torch.zeros(1), 0) for name in metrics
                                                                          if name not in self.episode_names}})
        values = torch.stack([metrics[name].float() if name in metrics else torch.full_like(ended, math.nan,
                              dtype=torch.float32) for name in self.episode_names])
        # an episode whose simulation diverged reports NaN metrics: it is left out
        self.episode_meter.update(values, ended & torch.isfinite(values))

    def _episode_meter_state(self) -> dict[str, tuple[torch.Tensor, int]]:
        if self.episode_meter is None:
            return {}
        sizes = self.episode_meter.current_size.reshape(-1).tolist()
        return {name: (self.episode_meter.mean[k:k + 1].detach().clone(), int(sizes[k]))
                for k, name in enumerate(self.episode_names)}

    def _load_episode_meter(self, state: dict[str, tuple[torch.Tensor, int]]) -> None:
        self.episode_names = list(state)
        self.episode_meter = EpisodeMeter(self.games_to_track, self.ppo_device, rows=len(state))
        for k, (mean, size) in enumerate(state.values()):
            self.episode_meter.mean[k] = mean.reshape(-1)[0].to(self.ppo_device)
            self.episode_meter.current_size[k] = float(size)

    def play_steps(self):
        h, n = self.horizon_length, self.num_actors * self.num_agents
        paired_dim = self.env_info["paired_observation_space"].shape[0]
        dev = self.ppo_device
        self._rollout = {
            "n": 0,
            "task_rewards": torch.zeros((h, n, 1), device=dev),
            "paired_obs": torch.zeros((h, n, paired_dim), device=dev),
            "time_outs": torch.zeros((h, n), device=dev),
        }
        batch_dict = self._rollout_steps()
        flushed = self.vec_env.flush_episode_metrics() if hasattr(self.vec_env, "flush_episode_metrics") else None
        if flushed is not None and flushed[0]:  # the last step's episodes, logged with this epoch's
            self._update_episode_meter(*flushed)
        rec, self._rollout = self._rollout, None
        self.last_rollout = rec

        # Recompute returns from this algorithm's rewards (rl-games used the task reward).
        rewards = self.rewards_shaper(self.compute_rewards(rec))
        values = self.experience_buffer.tensor_dict["values"]
        if self.value_bootstrap:
            rewards = rewards + self.gamma * values * rec["time_outs"].unsqueeze(-1)
        last_values = self.get_values(self.obs)
        advs = self.discount_values(self.dones.float(), last_values,
                                    self.experience_buffer.tensor_dict["dones"].float(), values, rewards)
        batch_dict["returns"] = a2c_common.swap_and_flatten01(advs + values)
        batch_dict["paired_obs"] = a2c_common.swap_and_flatten01(rec["paired_obs"])
        return batch_dict

    def get_action_values(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """rl-games' action step with the Gaussian policy sampled as ``mu + sigma * eps``: rl-games'
        ``Normal.sample()`` calls ``torch.normal(mu, sigma)``, which checks ``sigma >= 0`` on the
        host, a sync per step. The same distribution; another random stream."""
        model = self.model
        if not isinstance(model, models.ModelA2CContinuousLogStd.Network) or self.has_central_value or self.is_rnn:
            return super().get_action_values(obs)
        model.eval()
        with torch.no_grad():
            x = model.norm_obs(self._preproc_obs(obs["obs"]))
            mu, logstd, value, states = model.a2c_network({"obs": x, "is_train": False, "prev_actions": None,
                                                           "rnn_states": self.rnn_states})
            sigma = torch.exp(logstd)
            actions = mu + sigma * torch.randn_like(mu)
            return {"neglogpacs": torch.squeeze(model.neglogp(actions, mu, sigma, logstd)),
                    "values": model.denorm_value(value), "actions": actions, "rnn_states": states,
                    "mus": mu, "sigmas": sigma}

    def _rollout_steps(self) -> dict[str, Any]:
        """rl-games' rollout (``A2CBase.play_steps``) without a host sync per step: finished episodes
        reach the reward and length meters through the done mask, not through its indices. The
        returns are left out: :meth:`play_steps` computes them from this algorithm's rewards."""
        buf, step_time = self.experience_buffer, 0.0
        for n in range(self.horizon_length):
            res = self.get_action_values(self.obs)
            buf.update_data("obses", n, self.obs["obs"])
            buf.update_data("dones", n, self.dones)
            for key in self.update_list:
                buf.update_data(key, n, res[key])
            if self.has_central_value:
                buf.update_data("states", n, self.obs["states"])
            started = time.perf_counter()
            self.obs, rewards, self.dones, infos = self.env_step(res["actions"])
            step_time += time.perf_counter() - started
            shaped = self.rewards_shaper(rewards)
            if self.value_bootstrap and "time_outs" in infos:
                shaped.add_(self.gamma * res["values"] * self.cast_obs(infos["time_outs"]).unsqueeze(1).float())
            buf.update_data("rewards", n, shaped)
            self.current_rewards.add_(rewards)
            self.current_shaped_rewards.add_(shaped)
            self.current_lengths.add_(1)
            done = self.dones.bool()
            self.game_rewards.update(self.current_rewards.T, done)
            self.game_shaped_rewards.update(self.current_shaped_rewards.T, done)
            self.game_lengths.update(self.current_lengths.float(), done)
            alive = (~done).float()
            self.current_rewards.mul_(alive[:, None])
            self.current_shaped_rewards.mul_(alive[:, None])
            self.current_lengths.mul_(alive)
        batch_dict = buf.get_transformed_list(a2c_common.swap_and_flatten01, self.tensor_list)
        batch_dict["played_frames"] = self.batch_size
        batch_dict["step_time"] = step_time
        return batch_dict

    def compute_rewards(self, rollout: dict[str, Any]) -> torch.Tensor:
        """Rewards (H, N, 1) that PPO maximises; plain PPO: the task reward."""
        return rollout["task_rewards"]

    # ------------------------------------------------------------------ hooks
    def extra_state(self) -> dict[str, Any]:
        """Subclass state to checkpoint (annealing, reward statistics, discriminators, ...)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def write_extra_stats(self, frame: int, epoch_num: int) -> None:
        """Log subclass scalars after each epoch (tensorboard step = frame)."""

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def _meter_state(meter: EpisodeMeter) -> tuple[torch.Tensor, int]:
        return meter.mean.detach().clone(), int(meter.current_size.max())

    @staticmethod
    def _load_meter(meter: EpisodeMeter, state) -> None:
        mean, size = state  # a checkpoint of rl-games' AverageMeter holds a (1, rows) mean
        meter.mean = mean.reshape(meter.mean.shape).to(meter.mean.device)
        meter.current_size = torch.full_like(meter.mean, float(size))

    def full_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (superset of rl-games' checkpoint)."""
        state = self.get_full_state_weights()  # model (+ normalisers), optimizer, epoch, frame, env_state
        state.update({
            "format": "near-rl-v1",
            "total_time": self.total_time,
            "last_lr": self.last_lr,
            "entropy_coef": self.entropy_coef,
            "agent_obs": self.obs,
            "dones": self.dones,
            "current_rewards": self.current_rewards,
            "current_shaped_rewards": self.current_shaped_rewards,
            "current_lengths": self.current_lengths,
            "meters": {
                "game_rewards": self._meter_state(self.game_rewards),
                "game_shaped_rewards": self._meter_state(self.game_shaped_rewards),
                "game_lengths": self._meter_state(self.game_lengths),
                **{f"episode/{k}": v for k, v in self._episode_meter_state().items()},
            },
            "rng": runtime.capture_rng(),
            "extra": self.extra_state(),
        })
        return state

    def save_checkpoint(self) -> None:
        """Flush the summaries, then write ``nn/checkpoint.pth`` stamped with the wall time."""
        if self.writer is not None:
            self.writer.flush()
        state = self.full_state()
        state["wall_time"] = runtime.now()
        runtime.atomic_save(state, self.checkpoint_path)

    def load_full_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`full_state` checkpoint (after ``init_tensors`` and the first reset)."""
        self.set_full_state_weights(state, set_epoch=True)
        self.total_time = float(state.get("total_time", 0.0))
        self.last_lr = state.get("last_lr", self.last_lr)
        self.update_lr(self.last_lr)
        self.entropy_coef = state.get("entropy_coef", self.entropy_coef)
        dev = self.ppo_device
        if "agent_obs" in state:
            obs = state["agent_obs"]
            self.obs = {k: v.to(dev) for k, v in obs.items()} if isinstance(obs, dict) else obs.to(dev)
            self.dones = state["dones"].to(dev)
            self.current_rewards = state["current_rewards"].to(dev)
            self.current_shaped_rewards = state["current_shaped_rewards"].to(dev)
            self.current_lengths = state["current_lengths"].to(dev)
        meters = state.get("meters", {})
        for name in ("game_rewards", "game_shaped_rewards", "game_lengths"):
            if name in meters:
                self._load_meter(getattr(self, name), meters[name])
        episode = {key[len("episode/"):]: value for key, value in meters.items() if key.startswith("episode/")}
        if episode:
            self._load_episode_meter(episode)
        self.load_extra_state(state.get("extra", {}))
        if "rng" in state:
            runtime.restore_rng(state["rng"])

    # ------------------------------------------------------------------ loop
    def write_episode_stats(self, frame: int, epoch_num: int) -> None:
        """rl-games' reward / episode-length tags plus per-episode task metrics."""
        if float(self.game_rewards.current_size.max()) > 0:
            mean_rewards = np.atleast_1d(self.game_rewards.get_mean())
            mean_shaped = np.atleast_1d(self.game_shaped_rewards.get_mean())
            mean_lengths = self.game_lengths.get_mean()
            self.mean_rewards = mean_rewards[0]
            for i in range(self.value_size):
                name = "rewards" if i == 0 else f"rewards{i}"
                self.writer.add_scalar(f"{name}/step", mean_rewards[i], frame)
                self.writer.add_scalar(f"{name}/iter", mean_rewards[i], epoch_num)
                self.writer.add_scalar(f"{name}/time", mean_rewards[i], self.total_time)
                self.writer.add_scalar(f"shaped_{name}/step", mean_shaped[i], frame)
            self.writer.add_scalar("episode_lengths/step", mean_lengths, frame)
            self.writer.add_scalar("episode_lengths/iter", mean_lengths, epoch_num)
            self.writer.add_scalar("episode_lengths/time", mean_lengths, self.total_time)
        for name, (mean, size) in self._episode_meter_state().items():
            if size > 0:
                self.writer.add_scalar(f"{name}/step", float(mean), frame)

    def train(self):
        """Train until ``max_epochs``; return 0, or 3 after a stop signal (checkpoint written)."""
        self.init_tensors()
        self.obs = self.env_reset()
        self.curr_frames = self.batch_size_envs
        if self.resume_from:
            self.load_full_state(runtime.load_checkpoint(self.resume_from, self.ppo_device))
            print(f"near: resumed from {self.resume_from} at epoch {self.epoch_num}, frame {self.frame}", flush=True)
        exit_code = runtime.EXIT_DONE
        while self.max_epochs < 0 or self.epoch_num < self.max_epochs:
            if self.stop.requested:
                self.save_checkpoint()
                exit_code = runtime.EXIT_INTERRUPTED
                break
            epoch_num = self.update_epoch()
            (step_time, play_time, update_time, sum_time, a_losses, c_losses, b_losses,
             entropies, kls, last_lr, lr_mul) = self.train_epoch()
            self.dataset.update_values_dict(None)
            self.total_time += sum_time
            self.frame += self.curr_frames
            frame = self.frame // self.num_agents
            a2c_common.print_statistics(self.print_stats, self.curr_frames, step_time, play_time, sum_time,
                                        epoch_num, self.max_epochs, frame, self.max_frames)
            self.write_stats(self.total_time, epoch_num, step_time, play_time, update_time, a_losses, c_losses,
                             entropies, kls, last_lr, lr_mul, frame, sum_time, play_time, self.curr_frames)
            if len(b_losses) > 0:
                self.writer.add_scalar("losses/bounds_loss", torch_ext.mean_list(b_losses).item(), frame)
            self.write_episode_stats(frame, epoch_num)
            self.write_extra_stats(frame, epoch_num)
            finished = self.max_epochs >= 0 and epoch_num >= self.max_epochs
            periodic = self.save_freq > 0 and epoch_num % self.save_freq == 0
            if finished or periodic or self.stop.requested:
                self.save_checkpoint()
            if self.stop.requested and not finished:
                exit_code = runtime.EXIT_INTERRUPTED
                break
        if self.writer is not None:
            self.writer.flush()
        self.run_result.update({"exit_code": exit_code, "epoch": self.epoch_num, "frame": self.frame})
        return exit_code


def _ppo_agent(**kwargs):
    return PPOAgent(**kwargs)


register_algorithm("ppo_continuous", _ppo_agent, lambda **kwargs: players.PpoPlayerContinuous(**kwargs))
