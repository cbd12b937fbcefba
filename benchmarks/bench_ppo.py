"""End-to-end PPO samples per second with NEAR's energy reward in the loop.

    python benchmarks/bench_ppo.py [--device cpu|cuda:0] [--envs 128] [--iterations 8]

Trains a tiny energy model (``near train ncsn``, 200 iterations), then runs
``near train rl task=mazeNEAR`` (rollout in the torch maze, energy reward with annealing,
PPO updates, tensorboard logging) and plain ``task=mazePPO`` with the same sizes. Samples/s
are measured from the event files' wall times between the end of the first epoch (warm-up)
and the end of the last. Prints LAST NEAR's rate as a ratio to plain PPO's (the cost of the
energy reward). Target on one H100: >= 200k samples/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile


def samples_per_s(run_dir: str) -> tuple[float, int]:
    from tensorboardX.proto import event_pb2

    from near.training.tblog import _read_records, event_files

    points = []
    for path in event_files(os.path.join(run_dir, "summaries")):
        for frame in _read_records(path):
            event = event_pb2.Event()
            event.ParseFromString(frame[12:-4])
            for value in event.summary.value:
                if value.tag == "losses/a_loss":
                    points.append((event.step, event.wall_time))
    points.sort()
    (f0, t0), (f1, t1) = points[0], points[-1]
    return (f1 - f0) / (t1 - t0), f1 - f0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--envs", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--extra", default="", help="more overrides, space separated")
    args = parser.parse_args()

    from near.training.entry import train_ncsn_stage, train_rl_stage

    work = tempfile.mkdtemp(prefix="near-bench-ppo-")
    os.environ.setdefault("NEAR_CACHE_DIR", os.path.join(work, "cache"))
    common = [f"device={args.device}", f"torch_threads={args.threads}", f"num_envs={args.envs}",
              f"max_iterations={args.iterations}", "++train.params.config.print_stats=False",
              "++train.params.config.save_frequency=0", *args.extra.split()]
    nc = "++train.params.config.near_config"
    assert train_ncsn_stage(["task=mazeNEAR", f"run_dir={work}/ncsn", f"device={args.device}",
                             f"{nc}.training.n_iters=200"]) == 0
    near = [f"{nc}.inference.eb_model_checkpoint={work}/ncsn/nn/checkpoint.pth",
            f"{nc}.inference.running_mean_std_checkpoint={work}/ncsn/nn/running_mean_std.pth",
            f"{nc}.inference.sigma_level=-1"]
    assert train_rl_stage(["task=mazePPO", f"run_dir={work}/ppo", *common]) == 0
    ppo, n_ppo = samples_per_s(f"{work}/ppo")
    print(f"plain PPO: {ppo:,.0f} samples/s ({n_ppo} samples timed, {args.envs} envs, {args.device})", flush=True)
    assert train_rl_stage(["task=mazeNEAR", f"run_dir={work}/near", *common, *near]) == 0
    rate, n = samples_per_s(f"{work}/near")
    print(f"NEAR PPO: {rate:,.0f} samples/s ({n} samples timed, {args.envs} envs, {args.device})", flush=True)
    print(f"NEAR PPO samples/s with {args.envs} envs on {args.device}: {rate:,.0f} = {rate / ppo:.2f}x plain PPO")


if __name__ == "__main__":
    main()
