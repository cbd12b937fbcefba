"""The two stage entry points: ``near train ncsn`` and ``near train rl`` (NEAR's
``train_ncsn.py`` and ``train.py``).

Both compose the hydra config into typed settings (:mod:`near.training.settings`: an unknown or
ill-typed key stops here, before any file is written), put every output under ``run_dir``
(default ``runs/<experiment or task name>``), write the resolved settings there (``config.yaml``)
and the motion files the task reads with their sha256 (``motions.json``),
install the SIGTERM/SIGUSR2/SIGINT handlers and resume from ``run_dir/nn/checkpoint.pth`` when it
exists. Exit status: 0 finished, 3 interrupted (checkpoint written, resumable).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from near.errors import ConfigError
from near.exitcodes import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK
from near.training import runtime
from near.training.settings import Settings


class _StageSignals:
    """The stage's stop request, installed before anything slow (hydra, torch) so that a SIGTERM
    (or a first Ctrl-C) at any moment ends the stage as interrupted (checkpoint, exit 3), never by
    the signal's default action (143). Once the stage has returned its status is decided: a late
    signal only is noted."""

    def __enter__(self) -> runtime.StopRequest:
        self.stop = runtime.StopRequest().install()
        return self.stop

    def __exit__(self, *exc: object) -> None:
        previous = dict(self.stop._previous)
        self.stop.uninstall()
        for sig, handler in previous.items():
            if handler in (signal.SIG_DFL, None):
                signal.signal(sig, _late_signal)


def _late_signal(signum: int, frame: Any) -> None:
    print(f"near: signal {signum} after the stage ended; its status stands", flush=True)


def _interrupted(code: int, stop: runtime.StopRequest) -> int:
    """A stopped stage that did not finish and was not refused is interrupted (resumable)."""
    return EXIT_INTERRUPTED if stop.requested and code not in (EXIT_OK, EXIT_CONFIG) else code


def _device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device}: CUDA is not available on this machine (use device=cpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device != "cpu":
        raise ConfigError(f"device={device!r}: expected cpu or cuda:N")
    return device


def _run_dir(settings: Settings) -> str:
    return os.path.abspath(settings.run_dir or os.path.join("runs", settings.experiment or settings.task.name))


def _seed(seed: int) -> int:
    import random

    if seed == -1:
        seed = random.randint(0, 2**31 - 1)
    return seed


#: a max_iterations at or above this is NEAR's frame budget (its sweeps pass e.g. 60e6), not epochs
FRAME_BUDGET_MIN = 100_000


def epochs_of(value: Any, frames_per_epoch: int) -> int:
    """``max_iterations`` as PPO epochs: NEAR's sweeps give frame budgets (``60e6``), converted
    to the epochs that cover them; smaller numbers are epochs already."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"max_iterations={value!r}: expected a number of epochs (or of frames, e.g. 60e6)") from None
    if number >= FRAME_BUDGET_MIN:
        return int(-(-number // frames_per_epoch))
    return int(number)


def _check_isaacgym(overrides: list[str]) -> None:
    """``task.sim.backend=isaacgym`` needs Isaac Gym: fail early with installation instructions."""
    values = dict(item.lstrip("+~").partition("=")[::2] for item in overrides)
    if values.get("task.sim.backend") == "isaacgym":
        from near.training.envs.isaacgym_guard import isaacgym_env

        isaacgym_env(values.get("task", "Humanoid"), num_envs=1, device="cpu", seed=0)


def _prepare(stage: str, overrides: list[str]) -> tuple[Settings, str, str, int]:
    import json

    import torch
    import yaml

    from near.training.settings import load_settings, to_dict

    _check_isaacgym(overrides)
    settings = load_settings(overrides)
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    if settings.torch_deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_float32_matmul_precision(settings.matmul_precision)
    device, run_dir, seed = _device(settings.device), _run_dir(settings), _seed(settings.seed)
    motions = _motion_sources(settings.task)
    os.makedirs(run_dir, exist_ok=True)
    name = "ncsn_config.yaml" if stage == "ncsn" else "config.yaml"
    with open(os.path.join(run_dir, name), "w") as fh:
        yaml.safe_dump(to_dict(settings), fh, sort_keys=False)
    if motions is not None:  # what the run reads, by content (the report can group runs by it)
        with open(os.path.join(run_dir, "motions.json"), "w") as fh:
            json.dump(motions, fh, indent=1)
    return settings, run_dir, device, seed


def _motion_sources(task: Any) -> list[dict] | None:
    """The motion files the task reads, their sha256 and which are synthetic (None: the env reads
    none); ConfigError naming a missing file and where it was looked for, or a setting the env
    refuses (checked here, before the run dir is written: a resumed run keeps its config.yaml)."""
    if task.env_type == "Humanoid":
        from near.training.envs.humanoid.env import check_env_config
        from near.training.envs.humanoid.motion_lib import motion_sources

        check_env_config(task.env)
    elif task.env_type == "motion":
        from near.training.motions import motion_sources
    else:
        return None
    return motion_sources(task.env.motion_file)


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_ncsn_stage(overrides: list[str]) -> int:
    """Stage ``ncsn``: train the energy model on the task's demonstrations."""
    with _StageSignals() as stop:
        return _interrupted(_train_ncsn_stage(overrides, stop), stop)


def _train_ncsn_stage(overrides: list[str], stop: runtime.StopRequest) -> int:
    from near.training import registry
    from near.training.ncsn.trainer import train_ncsn

    from near.training.settings import NEARConfig

    settings, run_dir, device, seed = _prepare("ncsn", overrides)
    config = settings.train.params.config
    if not isinstance(config, NEARConfig):
        raise ConfigError(f"task={settings.task.name}: its train config has no near_config (an ncsn stage needs a NEAR task)")
    _seed_everything(seed)
    env = registry.make_env(settings.task, num_envs=1, device="cpu", seed=seed)
    return train_ncsn(config.near_config, seed, run_dir, device, stop, env)


def train_rl_stage(overrides: list[str]) -> int:
    """Stage ``rl``: NEAR / PPO (/ AMP, tracking) on rl-games."""
    with _StageSignals() as stop:
        return _interrupted(_train_rl_stage(overrides, stop), stop)


def _train_rl_stage(overrides: list[str], stop: runtime.StopRequest) -> int:
    from omegaconf import OmegaConf
    from rl_games.common.algo_observer import AlgoObserver
    from rl_games.torch_runner import Runner

    from near.training import registry, tblog
    from near.training.algos.ppo import CHECKPOINT_NAME
    from near.training.envs.base import register_with_rl_games

    from near.training.settings import rl_games_params

    settings, run_dir, device, seed = _prepare("rl", overrides)
    if settings.test:
        raise ConfigError("test=True (playing a policy) is not supported by `near train rl`; "
                          "evaluate a run with near.training.evaluate.evaluate_run(run_dir)")
    registry.algorithm(settings.train.params.algo.name)  # clear error for unknown algorithms before building anything
    params = rl_games_params(settings)
    config = params["config"]
    num_envs = settings.task.env.num_envs
    config["max_epochs"] = epochs_of(config["max_epochs"], num_envs * config["horizon_length"])
    _seed_everything(seed)
    env = registry.make_env(settings.task, num_envs=num_envs, device=device, seed=seed)

    ckpt = os.path.join(run_dir, "nn", CHECKPOINT_NAME)
    summaries = os.path.join(run_dir, "summaries")
    resume_from = None
    if os.path.isfile(ckpt):
        state = runtime.load_checkpoint(ckpt, "cpu")
        max_epochs = int(config["max_epochs"])
        tblog.truncate_after(summaries, state.get("wall_time"))
        if 0 <= max_epochs <= int(state.get("epoch", 0)):
            print(f"near: {run_dir} already finished ({state.get('epoch')} epochs)", flush=True)
            return runtime.EXIT_DONE
        resume_from = ckpt
    else:
        tblog.truncate_after(summaries, None)

    result: dict[str, Any] = {}
    config.update({
        "device": device,
        "train_dir": os.path.dirname(run_dir),
        "full_experiment_name": os.path.basename(run_dir),
        "env_name": register_with_rl_games(env),
        "env_config": {},
        "near_stop": stop,
        "near_resume_from": resume_from,
        "near_result": result,
    })
    params["seed"] = seed
    params["torch_threads"] = settings.torch_threads
    load_path = settings.checkpoint
    if load_path and resume_from is None and not os.path.isfile(load_path):
        raise ConfigError(f"checkpoint={load_path}: file not found")
    runner = Runner(algo_observer=AlgoObserver())
    registry.install_into_rl_games(runner)
    runner.load_config(params=params)
    runner.run_train({"train": True, "play": False,
                      "checkpoint": load_path if (load_path and resume_from is None) else None})
    return int(result.get("exit_code", 1))
