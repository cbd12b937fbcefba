"""Maze environment throughput: env steps per second vs number of environments.

    python benchmarks/bench_env.py [--device cpu|cuda:0] [--envs 1,256,4096,16384] [--seconds 2] [--physics auto|eager|compiled]

Random actions (one fixed tensor per size, so action sampling is not timed). ``--physics auto``
is the task config's default (torch.compile on CUDA, eager on CPU). Prints one line per size,
then LAST the figure at 16,384 envs (or the largest size) as a ratio to the smallest size's
rate measured in the same run (the vectorisation speed-up). Target on one H100: >= 10M
steps/s at 16,384 envs.
"""

from __future__ import annotations

import argparse
import time

import torch


def rate(num_envs: int, device: str, seconds: float, compile_physics) -> float:
    from near.training.envs.maze import MazeConfig, MazeEnv

    env = MazeEnv(num_envs, device=device, seed=0, config=MazeConfig(compile=compile_physics),
                  demo_settings={"metrics": False})
    env.reset()
    actions = torch.rand((num_envs, 2), device=device) * 2 - 1
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(20):  # warm-up (compilation, allocator)
        env.step(actions)
    sync()
    steps, start = 0, time.perf_counter()
    while True:
        for _ in range(50):
            env.step(actions)
        steps += 50
        sync()
        if time.perf_counter() - start > seconds:
            break
    return steps * num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--envs", default="1,64,256,1024,4096,16384")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--physics", choices=["auto", "eager", "compiled"], default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.envs.split(",")]
    results = {}
    for n in sizes:
        mode = {"auto": "auto", "eager": False, "compiled": True}[args.physics]
        results[n] = rate(n, args.device, args.seconds, mode)
        print(f"num_envs={n:>7d}  {results[n]:>14,.0f} env steps/s  ({args.device}, physics {args.physics})", flush=True)
    top = 16384 if 16384 in sizes else max(sizes)
    anchor = results[min(sizes)]
    print(f"maze env steps/s at {top} envs on {args.device} (physics {args.physics}): {results[top]:,.0f} "
          f"= {results[top] / anchor:.1f}x the {min(sizes)}-env rate")


if __name__ == "__main__":
    main()
