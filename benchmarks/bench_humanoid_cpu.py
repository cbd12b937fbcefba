"""Humanoid on one CPU core: physics steps/s of near's env (observation, rewards, termination,
metrics, resets included) against bare ``mujoco`` stepping the same model in the same run.

Both step 4 physics steps per control step for every env with the same random PD targets; the
anchor is a plain loop of ``mujoco.mj_step(model, data, 4)`` over one MjData per env (what the
env's backend does underneath). The env is timed twice: as training uses it without evaluation
extras (observation, reward, termination, resets) and with its per-episode metrics (DTW against
every reference frame at every step, SPARC at episode end; ``episodeMetrics``, on by default).
Prints the first ratio last (goal >= 0.8).

    python benchmarks/bench_humanoid_cpu.py [--envs 128] [--steps 60]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from near.training.envs.humanoid.backends import load_model  # noqa: E402
from near.training.envs.humanoid.env import PHYSICS_STEPS, HumanoidEnv, HumanoidEnvConfig  # noqa: E402


def bare(num_envs: int, steps: int, actions: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> float:
    model = load_model()
    datas = [mujoco.MjData(model) for _ in range(num_envs)]
    for d in datas:
        d.qpos[2] = 0.89
        mujoco.mj_forward(model, d)
    start = time.perf_counter()
    for t in range(steps):
        for i, d in enumerate(datas):
            d.ctrl[:] = offset + scale * actions[t, i]
            mujoco.mj_step(model, d, PHYSICS_STEPS)
    return num_envs * steps * PHYSICS_STEPS / (time.perf_counter() - start)


def near_env(num_envs: int, steps: int, actions: np.ndarray, metrics: bool) -> float:
    env = HumanoidEnv(HumanoidEnvConfig(num_envs=num_envs, motion_file="walk", episode_metrics=metrics), seed=0)
    env.reset()
    acts = torch.as_tensor(actions, dtype=torch.float32)
    start = time.perf_counter()
    for t in range(steps):
        env.step(acts[t])
    return num_envs * steps * PHYSICS_STEPS / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    actions = np.random.default_rng(0).uniform(-0.3, 0.3, (args.steps, args.envs, 28))
    env = HumanoidEnv(HumanoidEnvConfig(num_envs=1, motion_file="walk"))
    offset, scale = env.pd_offset.numpy().astype(float), env.pd_scale.numpy().astype(float)
    # alternate the two, best of 3 each: the machine is shared
    b, n, m = [], [], []
    for _ in range(3):
        b.append(bare(args.envs, args.steps, actions, offset, scale))
        n.append(near_env(args.envs, args.steps, actions, metrics=False))
        m.append(near_env(args.envs, args.steps, actions, metrics=True))
    print(f"bare mujoco: {max(b):,.0f} physics steps/s ({args.envs} envs, one core)")
    print(f"near HumanoidEnv + episode metrics: {max(m):,.0f} physics steps/s, {max(m) / max(b):.2f}x bare")
    print(f"near HumanoidEnv: {max(n):,.0f} physics steps/s (observation, reward, termination, resets)")
    print(f"ratio near/bare: {max(n) / max(b):.2f}")


if __name__ == "__main__":
    main()
