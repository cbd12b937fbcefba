"""One place where tasks, environments and algorithms are registered.

How a run finds its code:

* the task's typed settings (:mod:`near.training.settings`) name the environment with
  ``env_type``; :func:`make_env` builds it through :data:`ENV_FACTORIES`;
* the train config (``cfg/train/<task>PPO.yaml``) names the algorithm in
  ``params.algo.name`` (``near_continuous``, ``ppo_continuous``, ``amp_continuous``, ...);
  :func:`install_into_rl_games` registers every algorithm of :data:`ALGORITHMS` (and any
  custom models / networks) with an rl-games ``Runner`` the way rl-games expects:
  ``runner.algo_factory.register_builder``, ``runner.player_factory.register_builder``,
  ``model_builder.register_model`` / ``register_network``, ``vecenv.register`` and
  ``env_configurations.register``.

Modules listed in :data:`REGISTRATION_MODULES` call :func:`register_env` /
:func:`register_algorithm` / :func:`register_model` / :func:`register_network` when imported.
To add an environment or an algorithm, write the module and append its import path
to :data:`REGISTRATION_MODULES` (the issue-5 modules ``near.training.envs.motion``,
``near.training.algos.amp`` and ``near.training.algos.tracking`` go here).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from near.errors import ConfigError

#: Modules imported by :func:`load_registrations`, in order. Append yours here.
REGISTRATION_MODULES: list[str] = [
    "near.training.envs.maze",
    "near.training.envs.isaacgym_guard",
    "near.training.algos.ppo",
    "near.training.algos.near",
    # issue 5: motion-imitation env, AMP, DeepMimic-style tracking
    "near.training.envs.motion",
    "near.training.algos.amp",
    "near.training.algos.tracking",
    "near.training.envs.humanoid",
]

#: env type -> factory(task settings, num_envs, device, seed) -> VecEnv
ENV_FACTORIES: dict[str, Callable[..., Any]] = {}


@dataclass
class AlgoSpec:
    """rl-games builders of one algorithm: ``agent(base_name=..., params=...)``, ``player(params=...)``."""

    agent: Callable[..., Any]
    player: Callable[..., Any] | None = None


#: rl-games algorithm name (``params.algo.name``) -> builders
ALGORITHMS: dict[str, AlgoSpec] = {}
#: rl-games model name -> model class (``target_class(network)``)
MODELS: dict[str, Any] = {}
#: rl-games network name -> network builder class (``target_class()``)
NETWORKS: dict[str, Any] = {}

_loaded = False


def register_env(env_type: str, factory: Callable[..., Any]) -> None:
    """Register ``factory(task settings, num_envs, device, seed) -> VecEnv`` under ``env_type``."""
    ENV_FACTORIES[env_type] = factory


def register_algorithm(name: str, agent: Callable[..., Any], player: Callable[..., Any] | None = None) -> None:
    """Register an rl-games algorithm (agent builder and optional player builder)."""
    ALGORITHMS[name] = AlgoSpec(agent=agent, player=player)


def register_model(name: str, target_class: Any) -> None:
    """Register an rl-games model class (built as ``target_class(network)``)."""
    MODELS[name] = target_class


def register_network(name: str, target_class: Any) -> None:
    """Register an rl-games network builder class (built as ``target_class()``)."""
    NETWORKS[name] = target_class


def load_registrations() -> None:
    """Import every module of :data:`REGISTRATION_MODULES` once (they register themselves)."""
    global _loaded
    if _loaded:
        return
    for module in REGISTRATION_MODULES:
        importlib.import_module(module)
    _loaded = True


def make_env(task: Any, num_envs: int, device: str, seed: int) -> Any:
    """Build the vectorized environment of typed task settings ``task`` on ``device``."""
    load_registrations()
    if task.env_type not in ENV_FACTORIES:
        raise ConfigError(f"task.env_type={task.env_type!r} is not a registered environment "
                          f"(known: {', '.join(sorted(ENV_FACTORIES))})")
    return ENV_FACTORIES[task.env_type](task, num_envs=num_envs, device=device, seed=seed)


def algorithm(name: str) -> AlgoSpec:
    """The registered builders of algorithm ``name`` (clear error if unknown)."""
    load_registrations()
    if name not in ALGORITHMS:
        raise ConfigError(f"train.params.algo.name={name!r} is not a registered algorithm "
                          f"(known: {', '.join(sorted(ALGORITHMS))})")
    return ALGORITHMS[name]


def install_into_rl_games(runner: Any) -> None:
    """Register all algorithms, players, models and networks with an rl-games ``Runner``."""
    from rl_games.algos_torch import model_builder

    load_registrations()
    for name, spec in ALGORITHMS.items():
        runner.algo_factory.register_builder(name, spec.agent)
        if spec.player is not None:
            runner.player_factory.register_builder(name, spec.player)
    for name, cls in MODELS.items():
        model_builder.register_model(name, cls)
    for name, cls in NETWORKS.items():
        model_builder.register_network(name, cls)
