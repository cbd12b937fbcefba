"""The two stage entry points: ``near train ncsn`` and ``near train rl`` (NEAR's
``train_ncsn.py`` and ``train.py``).

Both compose the hydra config, put every output under ``run_dir`` (default
``runs/<experiment or task name>``), write the resolved config there (``config.yaml``),
install the SIGTERM/SIGUSR2 handlers and resume from ``run_dir/nn/checkpoint.pth`` when it
exists. Exit status: 0 finished, 3 interrupted (checkpoint written, resumable).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from near.errors import ConfigError
from near.exitcodes import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK
from near.training import runtime


class _StageSignals:
    """The stage's stop request, installed before anything slow (hydra, torch) so that a SIGTERM
    at any moment ends the stage as interrupted (checkpoint, exit 3), never by the signal's default
    action (143). Once the stage has returned its status is decided: a late signal only is noted."""

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


def _device(cfg: Any) -> str:
    import torch

    device = str(cfg.get("device", "") or cfg.get("rl_device", "cpu"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device}: CUDA is not available on this machine (use device=cpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device != "cpu":
        raise ConfigError(f"device={device!r}: expected cpu or cuda:N")
    return device


def _run_dir(cfg: Any) -> str:
    run_dir = str(cfg.get("run_dir", "") or "")
    if not run_dir:
        name = str(cfg.get("experiment", "") or cfg.task.name)
        run_dir = os.path.join("runs", name)
    return os.path.abspath(run_dir)


def _seed(cfg: Any) -> int:
    import random

    seed = int(cfg.seed)
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

        isaacgym_env({"name": values.get("task", "Humanoid")}, num_envs=1, device="cpu", seed=0)


def _prepare(stage: str, overrides: list[str]) -> tuple[Any, str, str, int]:
    import torch
    from omegaconf import OmegaConf

    from near.training.config import compose

    _check_isaacgym(overrides)
    cfg = compose(overrides)
    threads = int(cfg.get("torch_threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    if cfg.get("torch_deterministic", False):
        torch.use_deterministic_algorithms(True, warn_only=True)
    device, run_dir, seed = _device(cfg), _run_dir(cfg), _seed(cfg)
    os.makedirs(run_dir, exist_ok=True)
    name = "ncsn_config.yaml" if stage == "ncsn" else "config.yaml"
    with open(os.path.join(run_dir, name), "w") as fh:
        fh.write(OmegaConf.to_yaml(cfg))
    return cfg, run_dir, device, seed


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

    cfg, run_dir, device, seed = _prepare("ncsn", overrides)
    if "near_config" not in cfg.train.params.config:
        raise ConfigError(f"task={cfg.task.name}: its train config has no near_config (an ncsn stage needs a NEAR task)")
    _seed_everything(seed)
    env = registry.make_env(cfg.task, num_envs=1, device="cpu", seed=seed)
    return train_ncsn(cfg, run_dir, device, stop, env)


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

    cfg, run_dir, device, seed = _prepare("rl", overrides)
    if cfg.get("test", False):
        raise ConfigError("test=True (playing a policy) is not supported by `near train rl`; "
                          "evaluate a run with near.training.evaluate.evaluate_run(run_dir)")
    params = OmegaConf.to_container(cfg.train.params, resolve=True)
    algo_name = params["algo"]["name"]
    registry.algorithm(algo_name)  # clear error for unknown algorithms before building anything
    config = params["config"]
    num_envs = int(config.get("num_actors") or cfg.task.env.numEnvs)
    config["max_epochs"] = epochs_of(config.get("max_epochs", -1), num_envs * int(config.get("horizon_length", 1)))
    _seed_everything(seed)
    env = registry.make_env(cfg.task, num_envs=num_envs, device=device, seed=seed)

    ckpt = os.path.join(run_dir, "nn", CHECKPOINT_NAME)
    summaries = os.path.join(run_dir, "summaries")
    resume_from = None
    if os.path.isfile(ckpt):
        state = runtime.load_checkpoint(ckpt, "cpu")
        max_epochs = int(config.get("max_epochs", -1))
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
    config.setdefault("torch_compile", False)
    params["seed"] = seed
    params["torch_threads"] = int(cfg.get("torch_threads", 0) or 0)
    load_path = str(cfg.get("checkpoint", "") or "")
    if load_path and resume_from is None and not os.path.isfile(load_path):
        raise ConfigError(f"checkpoint={load_path}: file not found")
    runner = Runner(algo_observer=AlgoObserver())
    registry.install_into_rl_games(runner)
    runner.load_config(params=params)
    runner.run_train({"train": True, "play": False,
                      "checkpoint": load_path if (load_path and resume_from is None) else None})
    return int(result.get("exit_code", 1))
