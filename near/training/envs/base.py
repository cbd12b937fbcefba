"""The vectorized-environment interface of the training core, and its rl-games adapter.

Every task environment (maze, motion, ...) subclasses :class:`VecEnv`: ``num_envs``
environments batched as torch tensors on one device (CPU or GPU), stepped together.

Contract (shapes use N = num_envs):

* actions are ``(N, action_dim)`` floats in ``[-1, 1]``;
* ``reset()`` resets every env and returns the policy observation ``(N, obs_dim)``;
* ``step(actions)`` returns ``(obs, reward, done, infos)`` with ``reward`` ``(N,)`` float,
  ``done`` ``(N,)`` bool; done envs are reset inside ``step`` so ``obs`` is post-reset;
* ``infos`` holds at least
  - ``paired_obs`` ``(N, num_obs_steps * obs_per_step)``: the last ``num_obs_steps`` states
    (oldest first) ending with the state this step reached, before any reset. This is the
    input of NEAR's energy model and of AMP's discriminator; :meth:`demo_transitions`
    returns expert data in exactly the same layout;
  - ``time_outs`` ``(N,)`` float: 1 where the episode ended by the time limit (for value
    bootstrapping);
  - ``episode_metrics``: ``{name: (N,) tensor}`` per-episode task metrics, valid where
    ``done`` (e.g. ``success``, ``demo_distance``), or where ``episode_ended`` (N,) bool if the
    env reports its episodes a step after they end (the humanoid, so that the host need not wait
    for the GPU within a step; :meth:`VecEnv.flush_episode_metrics` gives the last step's); the
    agents log their means.
* ``state_dict()`` / ``load_state_dict()`` capture everything needed to continue exactly
  (positions, velocities, counters, the env's own random generator).
"""

from __future__ import annotations

import abc
from typing import Any

import torch


class VecEnv(abc.ABC):
    """A batch of ``num_envs`` environments on one torch device."""

    num_envs: int
    device: torch.device
    obs_dim: int
    action_dim: int
    #: features of one state in ``paired_obs``
    obs_per_step: int
    #: consecutive states in one ``paired_obs`` row (NEAR's ``numObsSteps``)
    num_obs_steps: int
    max_episode_length: int
    #: seconds of simulated time per step
    dt: float

    @property
    def paired_obs_dim(self) -> int:
        """Width of ``infos['paired_obs']`` and of :meth:`demo_transitions` rows."""
        return self.obs_per_step * self.num_obs_steps

    @abc.abstractmethod
    def reset(self) -> torch.Tensor:
        """Reset all envs; return observations ``(N, obs_dim)``."""

    @abc.abstractmethod
    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every env by one step (see the module docstring for the contract)."""

    @abc.abstractmethod
    def demo_transitions(self) -> torch.Tensor:
        """Expert transitions ``(M, paired_obs_dim)`` in the layout of ``infos['paired_obs']``."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def flush_episode_metrics(self) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
        """The episode metrics not yet in any ``infos`` and the mask of their envs (an env that
        reports episodes a step late holds the last step's); None if there are none."""
        return None

    def feature_mask(self, name: str | None) -> torch.Tensor | None:
        """Boolean mask over ``paired_obs`` features for a named mask (None: keep all)."""
        if name in (None, "", "None"):
            return None
        raise KeyError(f"{type(self).__name__} has no feature mask named {name!r}")


class RlGamesVecEnv:
    """Adapter from :class:`VecEnv` to rl-games' ``IVecEnv`` (tensors in, tensors out)."""

    def __init__(self, env: VecEnv):
        self.env = env

    def step(self, actions: torch.Tensor):
        return self.env.step(actions)

    def reset(self) -> torch.Tensor:
        return self.env.reset()

    def flush_episode_metrics(self):
        return self.env.flush_episode_metrics()

    def reset_done(self):
        # Our envs reset inside step(); nothing is pending.
        return None, []

    def has_action_masks(self) -> bool:
        return False

    def get_number_of_agents(self) -> int:
        return 1

    def seed(self, seed: int) -> None:
        pass

    def set_train_info(self, env_frames, *args, **kwargs) -> None:
        pass

    def get_env_state(self):
        return self.env.state_dict()

    def set_env_state(self, env_state) -> None:
        if env_state is not None:
            self.env.load_state_dict(env_state)

    def get_env_info(self) -> dict[str, Any]:
        import numpy as np
        from rl_games.common.gym_compat import gym

        inf = np.float32(np.inf)
        return {
            "observation_space": gym.spaces.Box(-inf, inf, (self.env.obs_dim,), dtype=np.float32),
            "action_space": gym.spaces.Box(-1.0, 1.0, (self.env.action_dim,), dtype=np.float32),
            "paired_observation_space": gym.spaces.Box(-inf, inf, (self.env.paired_obs_dim,), dtype=np.float32),
            "agents": 1,
            "value_size": 1,
        }


#: The env instance the next rl-games ``create_vec_env`` call hands out (set by the entry point).
_PENDING: dict[str, VecEnv] = {}


def register_with_rl_games(env: VecEnv, name: str = "near_env") -> str:
    """Make ``env`` reachable through rl-games' ``vecenv.create_vec_env(name, ...)``.

    Registers the vec-env type ``NEAR_TORCH`` (``vecenv.register``) and the env
    configuration ``name`` (``env_configurations.register``); returns ``name`` for the
    train config's ``env_name``.
    """
    from rl_games.common import env_configurations, vecenv

    _PENDING[name] = env
    vecenv.register("NEAR_TORCH", lambda config_name, num_actors, **kwargs: RlGamesVecEnv(_PENDING[config_name]))
    env_configurations.register(name, {"vecenv_type": "NEAR_TORCH", "env_creator": lambda **kwargs: _PENDING[name]})
    return name
