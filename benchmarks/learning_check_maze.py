"""Learning check on the maze (not a test): NEAR vs plain PPO vs a random policy.

    python benchmarks/learning_check_maze.py [--device cpu] [--envs 128] [--iterations 200]
        [--ncsn-iters 5000] [--variants near_fixed,near_anneal] [--work DIR]

Trains the energy model once (``near train ncsn``), then each rl variant with the same
seed and budget (``near train rl``), evaluates every final policy deterministically in 256
fresh mazes (``near.training.evaluate``) and prints a table. Variants:

* ``ppo``: ``task=mazePPO`` (task reward only);
* ``near_anneal``: NEAR, ``sigma_level=-1`` (annealed), task/energy weights 0.5/0.5;
* ``near_fixed``: NEAR at a fixed fine noise level (``--level``), weights 0/1 (pure imitation);
* ``near_fixed_mixed``: the same level, weights 0.5/0.5.

Energy model for the maze check: NEAR's maze settings except ``sigma_begin=5, L=20`` (the
input is standardised, so NCSNv2's rule "sigma_begin ~ largest distance between data
points" gives ~5 rather than NEAR's 20; fewer levels keep the annealing within a short run).
Prints LAST NEAR's demo-route rate next to PPO's and the random policy's.
"""

from __future__ import annotations

import argparse
import json
import os
import time

NC = "++train.params.config.near_config"


def variants(level: int) -> dict[str, list[str]]:
    anneal = [f"{NC}.inference.sigma_level=-1"]
    return {
        "near_anneal_imit": ["task=mazeNEAR", *anneal, f"{NC}.inference.task_reward_w=0.0",
                             f"{NC}.inference.energy_reward_w=1.0"],
        "near_anneal_fast": ["task=mazeNEAR", *anneal, f"{NC}.inference.anneal_window=1"],
        "near_anneal_narrow": ["task=mazeNEAR", *anneal, "++train.params.network.space.continuous.sigma_init.val=-3.0"],
        "near_fixed10_mixed": ["task=mazeNEAR", f"{NC}.inference.sigma_level=10"],
        "near_fixed12_imit": ["task=mazeNEAR", f"{NC}.inference.sigma_level=12", f"{NC}.inference.task_reward_w=0.0",
                              f"{NC}.inference.energy_reward_w=1.0"],
        "ppo": ["task=mazePPO"],
        "near_anneal": ["task=mazeNEAR", f"{NC}.inference.sigma_level=-1"],
        "near_fixed": ["task=mazeNEAR", f"{NC}.inference.sigma_level={level}", f"{NC}.inference.task_reward_w=0.0",
                       f"{NC}.inference.energy_reward_w=1.0"],
        "near_fixed_mixed": ["task=mazeNEAR", f"{NC}.inference.sigma_level={level}"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--envs", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--ncsn-iters", type=int, default=5000)
    parser.add_argument("--level", type=int, default=16)
    parser.add_argument("--variants", default="ppo,near_anneal")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", default="experiments/learning_check_maze")
    parser.add_argument("--parallel", action="store_true", help="train the variants as concurrent processes")
    args = parser.parse_args()

    import torch

    from near.training.entry import train_ncsn_stage, train_rl_stage
    from near.training.evaluate import evaluate_random, evaluate_run

    torch.set_num_threads(args.threads)
    work = os.path.abspath(args.work)
    model = [f"{NC}.model.sigma_begin=5", f"{NC}.model.L=20"]
    common = [f"device={args.device}", f"torch_threads={args.threads}", f"seed={args.seed}"]
    t0 = time.time()
    assert train_ncsn_stage(["task=mazeNEAR", f"run_dir={work}/ncsn", *common, *model,
                             f"{NC}.training.n_iters={args.ncsn_iters}"]) == 0
    print(f"ncsn: {time.time() - t0:.0f} s", flush=True)
    energy = [f"{NC}.inference.eb_model_checkpoint={work}/ncsn/nn/checkpoint.pth",
              f"{NC}.inference.running_mean_std_checkpoint={work}/ncsn/nn/running_mean_std.pth", *model]
    results = {"random": evaluate_random()}
    table = variants(args.level)
    names = args.variants.split(",")

    def overrides(name: str) -> list[str]:
        out = [*table[name], f"run_dir={work}/{name}", f"num_envs={args.envs}",
               f"max_iterations={args.iterations}", "++train.params.config.print_stats=False", *common]
        return out + energy if name.startswith("near") else out

    if args.parallel:
        import subprocess
        import sys

        t1 = time.time()
        procs = {n: subprocess.Popen([sys.executable, "-m", "near", "train", "rl", *overrides(n)],
                                     stdout=subprocess.DEVNULL, stderr=open(f"{work}/{n}.err", "w")) for n in names}
        for n, p in procs.items():
            assert p.wait() == 0, f"{n} failed: see {work}/{n}.err"
        for n in names:
            results[n] = evaluate_run(f"{work}/{n}") | {"train_s": round(time.time() - t1)}
            print(n, json.dumps(results[n]), flush=True)
    for name in ([] if args.parallel else names):
        t1 = time.time()
        assert train_rl_stage(overrides(name)) == 0
        results[name] = evaluate_run(f"{work}/{name}") | {"train_s": round(time.time() - t1)}
        print(name, json.dumps(results[name]), flush=True)
    with open(os.path.join(work, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"\n{'policy':18s} {'success':>8s} {'demo route':>10s} {'demo dist':>9s} {'ep len':>7s}")
    for name, r in results.items():
        print(f"{name:18s} {r['success_rate']:8.2f} {r['demo_route_rate']:10.2f} {r['demo_distance']:9.1f} "
              f"{r['episode_length']:7.1f}")
    best = max((n for n in results if n.startswith("near")), key=lambda n: results[n]["demo_route_rate"], default=None)
    if best:
        print(f"demo-route rate (reach the goal along the demonstrated corridor): {best} "
              f"{results[best]['demo_route_rate']:.2f} vs ppo {results.get('ppo', {}).get('demo_route_rate', float('nan')):.2f} "
              f"vs random {results['random']['demo_route_rate']:.2f}")


if __name__ == "__main__":
    main()
