"""Parallel hyper-parameter search for the motion learning check (not a test; a many-core CPU tool).

Runs ``near train ncsn`` / ``near train rl`` / ``near.training.eval_metrics`` as subprocesses, one
per (config, algorithm, motion, seed), ``--workers`` at a time, each with one torch thread on
the CPU, exactly as ``benchmarks/learning_check_motion.py`` does for a single setting. A config
is a named set of extra overrides (``GRID`` below, or ``--grid FILE.json`` with the same shape:
``{name: {"algos": [...], "rl": [...], "ncsn": [...], "iters": N, "envs": N}}``). Every finished
job appends one JSON line to ``OUT/sweep.jsonl``; the summary prints each config's DTW error
per motion as a ratio to the random policy's (lower is better; < 1 beats random), worst last.

    python benchmarks/sweep_motion.py --configs base lr1e3 ... --workers 15 --out DIR [--budget 500]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
C = "++train.params.config"
NC = f"{C}.near_config"
SIG = "++train.params.network.space.continuous.sigma_init.val"

GRID: dict[str, dict] = {
    "base": {},
    "lr1e3": {"rl": [f"{C}.learning_rate=1e-3"]},
    "sig2": {"rl": [f"{SIG}=-1.6"]},
    "h32": {"rl": [f"{C}.horizon_length=32"]},
    "g95": {"rl": [f"{C}.gamma=0.95"]},
    "it250": {"iters": 250},
    "e256it200": {"iters": 200, "envs": 256},
    "lr1e3it250": {"iters": 250, "rl": [f"{C}.learning_rate=1e-3"]},
    "lr1e3sig2": {"rl": [f"{C}.learning_rate=1e-3", f"{SIG}=-1.6"]},
    "lr1e3h32it200": {"iters": 200, "rl": [f"{C}.learning_rate=1e-3", f"{C}.horizon_length=32"]},
    # round 2 (horizon 32 helped both in round 1)
    "h32it200": {"iters": 200, "rl": [f"{C}.horizon_length=32"]},
    "h32sig2": {"algos": ["NEAR"], "rl": [f"{C}.horizon_length=32", f"{SIG}=-1.6"]},
    "h32g95": {"rl": [f"{C}.horizon_length=32", f"{C}.gamma=0.95"]},
    "h32it200nsb5": {"algos": ["NEAR"], "iters": 200, "rl": [f"{C}.horizon_length=32"],
                     "ncsn": [f"{NC}.model.sigma_begin=5", f"{NC}.model.L=20"]},
    "amp_lr1e3h32it200": {"algos": ["AMP"], "iters": 200, "rl": [f"{C}.learning_rate=1e-3", f"{C}.horizon_length=32"]},
    "lr1e3h32g95it150": {"algos": ["AMP"], "iters": 150,
                         "rl": [f"{C}.learning_rate=1e-3", f"{C}.horizon_length=32", f"{C}.gamma=0.95"]},
    # round 3: NEAR around horizon 32
    "h32me8": {"algos": ["NEAR"], "rl": [f"{C}.horizon_length=32", f"{C}.mini_epochs=8"]},
    "h32mb16": {"algos": ["NEAR"], "rl": [f"{C}.horizon_length=32", f"{C}.minibatch_size_per_env=16"]},
    "h32n3k": {"algos": ["NEAR"], "rl": [f"{C}.horizon_length=32"], "ncsn": [f"{NC}.training.n_iters=3000"]},
    "h64": {"algos": ["NEAR"], "rl": [f"{C}.horizon_length=64"]},
    "h32e256": {"algos": ["NEAR"], "envs": 256, "rl": [f"{C}.horizon_length=32"]},
    "h32lr5e4": {"algos": ["NEAR"], "rl": [f"{C}.horizon_length=32", f"{C}.learning_rate=5e-4"]},
    # round 4 (after cfg/train/motion{NEAR,AMP}PPO.yaml took horizon 32 (+ AMP gamma 0.95)): more seeds
    "h32n5k": {"algos": ["NEAR"], "rl": [f"{C}.horizon_length=32"], "ncsn": [f"{NC}.training.n_iters=5000"]},
    "amp_cfg": {"algos": ["AMP"]},
    # NEAR only
    "nsb5": {"algos": ["NEAR"], "ncsn": [f"{NC}.model.sigma_begin=5", f"{NC}.model.L=20"]},
    "nfix0": {"algos": ["NEAR"], "rl": [f"{NC}.inference.sigma_level=0"]},
    "nfix5": {"algos": ["NEAR"], "rl": [f"{NC}.inference.sigma_level=5"]},
    "n3k": {"algos": ["NEAR"], "ncsn": [f"{NC}.training.n_iters=3000"]},
    "nlr1e3": {"algos": ["NEAR"], "ncsn": [f"{NC}.optim.lr=1e-3"]},
    # AMP only
    "gp1": {"algos": ["AMP"], "rl": [f"{C}.disc_grad_penalty=1"]},
    "gp02": {"algos": ["AMP"], "rl": [f"{C}.disc_grad_penalty=0.2"]},
    "drs5": {"algos": ["AMP"], "rl": [f"{C}.disc_reward_scale=5", f"{C}.disc_grad_penalty=1"]},
}


def run(cmd: list[str], log: str) -> tuple[int, float]:
    t0 = time.time()
    with open(log, "a") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        rc = subprocess.run(cmd, cwd=REPO, env=ENV, stdout=fh, stderr=subprocess.STDOUT).returncode
    return rc, time.time() - t0


def evaluate(task: str, motion: str, extra: list[str], episodes: int, log: str) -> dict | None:
    cmd = [PY, "-m", "near.training.eval_metrics", f"task={task}", "num_envs=64", "torch_threads=1",
           f"++task.env.motion_file={motion}", "++task.env.earlyTermination=arena", "--episodes", str(episodes), *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        with open(log, "a") as fh:
            fh.write(" ".join(cmd) + "\n" + proc.stderr[-3000:])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=list(GRID))
    ap.add_argument("--grid", help="JSON file of configs (replaces GRID)")
    ap.add_argument("--motions", nargs="+", default=["circle", "figure8", "stepturn"])
    ap.add_argument("--algos", nargs="+", default=["NEAR", "AMP"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[42])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--envs", type=int, default=128)
    ap.add_argument("--ncsn-iters", type=int, default=1000)
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--budget", type=float, default=1e9, help="seconds after which no new job starts")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    grid = json.load(open(args.grid)) if args.grid else GRID
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "sweep.jsonl")
    log = os.path.join(args.out, "sweep.log")
    lock = threading.Lock()
    start = time.time()

    def record(row: dict) -> None:
        with lock:
            with open(results_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    ncsn_done: dict[str, threading.Event] = {}
    ncsn_ok: dict[str, bool] = {}

    def ncsn(motion: str, seed: int, ncsn_extra: list[str]) -> str | None:
        key = f"{motion}-{seed}-" + "-".join(sorted(ncsn_extra))
        ncsn_dir = os.path.join(args.out, "ncsn", str(abs(hash(key)) % 10**8))
        with lock:
            event = ncsn_done.get(key)
            owner = event is None
            if owner:
                event = ncsn_done[key] = threading.Event()
        if owner:
            rc, t = run([PY, "-m", "near", "train", "ncsn", "task=motionNEAR", f"seed={seed}", "torch_threads=1",
                         f"++task.env.motion_file={motion}", f"run_dir={ncsn_dir}",
                         f"{NC}.training.n_iters={args.ncsn_iters}", *ncsn_extra], log)
            ncsn_ok[key] = rc == 0
            record({"kind": "ncsn", "motion": motion, "seed": seed, "extra": ncsn_extra, "rc": rc, "time": t})
            event.set()
        event.wait()
        return ncsn_dir if ncsn_ok[key] else None

    def job(name: str, algo: str, motion: str, seed: int) -> None:
        if time.time() - start > args.budget:
            return
        cfg = grid[name]
        task = f"motion{algo}"
        run_dir = os.path.join(args.out, "runs", f"{name}-{algo}-{motion}-{seed}")
        extra = list(cfg.get("rl", []))
        if algo == "NEAR":
            ncsn_dir = ncsn(motion, seed, list(cfg.get("ncsn", [])))
            if ncsn_dir is None:
                record({"kind": "rl", "config": name, "algo": algo, "motion": motion, "seed": seed, "rc": -1})
                return
            extra += [f"{NC}.inference.eb_model_checkpoint={ncsn_dir}/nn/checkpoint.pth",
                      f"{NC}.inference.running_mean_std_checkpoint={ncsn_dir}/nn/running_mean_std.pth"]
        iters, envs = cfg.get("iters", args.iters), cfg.get("envs", args.envs)
        rc, t = run([PY, "-m", "near", "train", "rl", f"task={task}", f"seed={seed}", "torch_threads=1",
                     f"++task.env.motion_file={motion}", f"run_dir={run_dir}", f"max_iterations={iters}",
                     f"num_envs={envs}", f"{C}.print_stats=False", *extra], log)
        res = evaluate(task, motion, [f"checkpoint={run_dir}", *extra], args.episodes, log) if rc == 0 else None
        record({"kind": "rl", "config": name, "algo": algo, "motion": motion, "seed": seed, "rc": rc, "time": t,
                "iters": iters, "envs": envs, "dtw": res and res["dtw_error"], "jerk": res and res["root_jerk"]})

    def random_eval(motion: str) -> None:
        res = evaluate("motionPPO", motion, ["--random"], args.episodes, log)
        record({"kind": "random", "motion": motion, "dtw": res and res["dtw_error"]})

    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(random_eval, m) for m in args.motions]
        for seed in args.seeds:
            for name in args.configs:
                for algo in grid[name].get("algos", args.algos):
                    if algo not in args.algos:
                        continue
                    for motion in args.motions:
                        futures.append(pool.submit(job, name, algo, motion, seed))
        for f in futures:
            f.result()
    summarize(results_path)
    return 0


def summarize(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    rand = {r["motion"]: r["dtw"] for r in rows if r["kind"] == "random" and r["dtw"]}
    table: dict[tuple, dict] = {}
    for r in rows:
        if r["kind"] == "rl" and r.get("dtw") is not None and r["motion"] in rand:
            table.setdefault((r["config"], r["algo"]), {}).setdefault(r["motion"], []).append(r["dtw"] / rand[r["motion"]])
    print("random DTW: " + ", ".join(f"{m} {v:.3f}" for m, v in rand.items()))
    lines = []
    for (name, algo), per in table.items():
        means = {m: sum(v) / len(v) for m, v in per.items()}
        worst = max(means.values())
        lines.append((worst, f"{algo:5s} {name:14s} " + " ".join(f"{m} {means[m]:.2f}" for m in sorted(means))
                      + f"  worst {worst:.2f}"))
    for _, text in sorted(lines, reverse=True):
        print(text)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--summary":
        summarize(sys.argv[2])
    else:
        sys.exit(main())
