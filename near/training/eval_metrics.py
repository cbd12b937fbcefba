"""Evaluation run for any task: roll out a trained policy (or a random one), compute the paper's metrics.

    python -m near.training.eval_metrics task=motionTrack checkpoint=RUN/nn/checkpoint.pth \
        ++task.env.motion_file=figure8 [--episodes 64] [--random] [--out RUN/eval_metrics.json]

Hydra overrides are those of ``near train rl`` (the same config tree); ``checkpoint`` is a
checkpoint written by ``near train rl`` (``<run_dir>/nn/checkpoint.pth``; a run dir is accepted
too). Actions are the policy's means (deterministic). The environment's per-episode metrics
(``infos['episode_metrics']``: on the motion env the DTW error, SPARC, root velocity /
acceleration / jerk and success of ``near.metrics``; on the maze success and demo distance) are
averaged over the first ``episodes`` finished episodes, with the mean episode length. Prints
one JSON object (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

import torch

from near.errors import ConfigError, NearError
from near.training.envs.base import VecEnv
from near.training.settings import Settings

Policy = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def rollout_metrics(env: VecEnv, policy: Policy, episodes: int = 64, max_steps: int | None = None) -> dict[str, float]:
    """Step `env` with `policy` until `episodes` episodes finished; mean of each episode metric
    (an env may report an episode's metrics a step after it ends: they are taken where reported,
    the last step's from ``env.flush_episode_metrics()``)."""
    sums: dict[str, float] = {}
    count = diverged = reported = 0
    steps = 0
    lengths = torch.zeros(env.num_envs, dtype=torch.long, device=env.device)
    length_sum = 0.0
    limit = max_steps or 20 * env.max_episode_length * max(1, -(-episodes // env.num_envs))

    def take(found: dict[str, torch.Tensor], ended: torch.Tensor) -> None:
        """Add the metrics of the first episodes ending where `ended`, up to `episodes` in all
        (the same episodes, in the same order, as the lengths counted below)."""
        nonlocal reported, diverged
        ids = torch.nonzero(ended).flatten()[: episodes - reported]
        if ids.numel() and found:
            names = list(found)
            values = torch.stack([found[key][ids].float() for key in names], 1)
            finite = torch.isfinite(values).all(1)
            diverged += int((~finite).sum())
            for k, key in enumerate(names):
                sums[key] = sums.get(key, 0.0) + float(values[finite, k].sum())
        reported += ids.numel()

    obs = env.reset()
    while count < episodes:
        if steps >= limit:
            raise RuntimeError(f"evaluation: only {count} of {episodes} episodes finished in {steps} steps")
        obs, _, done, infos = env.step(policy(obs))
        steps += 1
        lengths += 1
        if "episode_metrics" in infos:
            take(infos["episode_metrics"], infos.get("episode_ended", done))
        ids = torch.nonzero(done).flatten()[: episodes - count]
        length_sum += float(lengths[ids].sum())
        count += ids.numel()
        lengths[done] = 0
    late = env.flush_episode_metrics()
    if late is not None:
        take(*late)
    # an episode whose simulation diverged (NaN metrics) counts, but not in the means
    valid = count - diverged
    out = {key: value / valid if valid else float("nan") for key, value in sums.items()}
    out["episode_length"] = length_sum / count
    out["episodes"] = count
    out["diverged_episodes"] = diverged
    return out


def random_policy(env: Any, seed: int = 0) -> Policy:
    """Uniform random actions in [-1, 1] (the reference point of the learning checks)."""
    gen = torch.Generator(device=env.device)
    gen.manual_seed(seed)
    return lambda obs: torch.rand(obs.shape[0], env.action_dim, generator=gen, device=env.device) * 2 - 1


def load_policy(settings: Settings, checkpoint: str, env: Any, device: str) -> Policy:
    """The deterministic policy (action means) of an rl-games checkpoint written by ``near train rl``."""
    from rl_games.algos_torch import model_builder

    from near.training import registry, runtime
    from near.training.settings import rl_games_params

    registry.load_registrations()
    for name, cls in registry.MODELS.items():
        model_builder.register_model(name, cls)
    for name, cls in registry.NETWORKS.items():
        model_builder.register_network(name, cls)
    state = runtime.load_checkpoint(checkpoint, device)
    config = settings.train.params.config
    model = model_builder.ModelBuilder().load(rl_games_params(settings)).build({
        "actions_num": env.action_dim,
        "input_shape": (env.obs_dim,),
        "num_seqs": env.num_envs,
        "value_size": 1,
        "normalize_value": config.normalize_value,
        "normalize_input": config.normalize_input,
    }).to(device)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise ConfigError(f"checkpoint {checkpoint} does not match this task's policy network: {err}") from err
    model.eval()

    def policy(obs: torch.Tensor) -> torch.Tensor:
        out = model({"is_train": False, "obs": obs.to(device), "prev_actions": None})
        return torch.clamp(out["mus"], -1.0, 1.0)

    return policy


def evaluate(overrides: list[str], episodes: int = 64, random: bool = False) -> dict[str, float]:
    """Compose the config (``near train rl`` overrides, incl. ``checkpoint=``), roll out, return metrics."""
    from near.training import registry
    from near.training.settings import load_settings

    settings = load_settings(overrides)
    device = settings.device
    seed = max(settings.seed, 0)
    torch.manual_seed(seed)
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    env = registry.make_env(settings.task, num_envs=settings.task.env.num_envs, device=device, seed=seed + 1)
    if random:
        policy = random_policy(env, seed)
    else:
        checkpoint = settings.checkpoint
        if not checkpoint:
            raise ConfigError("evaluation needs checkpoint=<run_dir>/nn/checkpoint.pth (or --random)")
        if os.path.isdir(checkpoint):
            checkpoint = os.path.join(checkpoint, "nn", "checkpoint.pth")
        policy = load_policy(settings, checkpoint, env, device)
    return rollout_metrics(env, policy, episodes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m near.training.eval_metrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="hydra overrides, e.g. task=motionAMP checkpoint=PATH")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--random", action="store_true", help="uniform random actions instead of a checkpoint")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_intermixed_args(argv)
    try:
        result = evaluate(list(args.overrides), args.episodes, args.random)
    except NearError as err:
        print(f"near: error: {err}", file=sys.stderr)
        return 2
    text = json.dumps(result, sort_keys=True)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
