"""Learning check (not a test): NEAR, AMP and tracking vs a random policy on each reference motion.

For every motion: train NEAR (ncsn stage, then rl), AMP and Track with small CPU budgets through
the real `near train` command line (one run at a time), then evaluate each final checkpoint with
deterministic actions over full-length episodes (``earlyTermination=arena`` for all, so tracking's
reference-based termination does not shorten its evaluation episodes) and compare the imitation
error (DTW, m) with a uniformly random policy's. Prints a Markdown table, then the run times.

    .venv/bin/python benchmarks/learning_check_motion.py [--motions circle figure8 stepturn]
        [--iters 100] [--envs 128] [--ncsn-iters 3000] [--out /tmp/near_learning_check]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run(cmd: list[str]) -> float:
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.time() - t0


def evaluate(task: str, motion: str, extra: list[str], episodes: int) -> dict:
    cmd = [PY, "-m", "near.training.eval_metrics", f"task={task}", "num_envs=64", "torch_threads=1",
           f"++task.env.motion_file={motion}", "++task.env.earlyTermination=arena", "--episodes", str(episodes), *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"evaluation failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--motions", nargs="+", default=["circle", "figure8", "stepturn"])
    ap.add_argument("--algos", nargs="+", default=["NEAR", "AMP", "Track"])
    ap.add_argument("--iters", type=int, default=100, help="rl max_iterations per run")
    ap.add_argument("--envs", type=int, default=128, help="num_envs per rl run")
    ap.add_argument("--ncsn-iters", type=int, default=3000)
    ap.add_argument("--episodes", type=int, default=64, help="evaluation episodes")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="/tmp/near_learning_check")
    args = ap.parse_args()

    rows, times = [], []
    for motion in args.motions:
        row = {"motion": motion, "random": evaluate("motionPPO", motion, ["--random"], args.episodes)}
        for algo in args.algos:
            task = f"motion{algo}"
            run_dir = os.path.join(args.out, motion, algo)
            common = [f"task={task}", f"seed={args.seed}", "torch_threads=1", f"++task.env.motion_file={motion}"]
            extra: list[str] = []
            if algo == "NEAR":
                ncsn_dir = os.path.join(args.out, motion, "ncsn")
                t = run([PY, "-m", "near", "train", "ncsn", *common, f"run_dir={ncsn_dir}",
                         f"++train.params.config.near_config.training.n_iters={args.ncsn_iters}"])
                times.append((motion, "ncsn", t))
                extra = [f"++train.params.config.near_config.inference.eb_model_checkpoint={ncsn_dir}/nn/checkpoint.pth",
                         f"++train.params.config.near_config.inference.running_mean_std_checkpoint="
                         f"{ncsn_dir}/nn/running_mean_std.pth"]
            t = run([PY, "-m", "near", "train", "rl", *common, *extra, f"run_dir={run_dir}",
                     f"max_iterations={args.iters}", f"num_envs={args.envs}"])
            times.append((motion, algo, t))
            row[algo] = evaluate(task, motion, [f"checkpoint={run_dir}", *extra], args.episodes)
        rows.append(row)
        print(f"[{motion}] " + " ".join(f"{k}={v['dtw_error']:.3f}" for k, v in row.items() if k != "motion"),
              flush=True)

    cols = ["random", *args.algos]
    print(f"\nDTW imitation error (m, lower is better), deterministic policy, {args.episodes} episodes of 5 s; "
          f"rl: {args.iters} iterations x {args.envs} envs; ncsn: {args.ncsn_iters} iterations")
    print("| motion | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for row in rows:
        print(f"| {row['motion']} | " + " | ".join(f"{row[c]['dtw_error']:.3f}" for c in cols) + " |")
    print("\nroot jerk (m/s^3) | " + "; ".join(f"{r['motion']}: " + ", ".join(f"{c} {r[c]['root_jerk']:.1f}" for c in cols)
                                          for r in rows))
    print("run times (s): " + ", ".join(f"{m}/{a} {t:.0f}" for m, a, t in times))
    ratios = [row[a]["dtw_error"] / row["random"]["dtw_error"] for row in rows for a in args.algos]
    print(f"worst DTW ratio to random over all motions and algorithms: {max(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
