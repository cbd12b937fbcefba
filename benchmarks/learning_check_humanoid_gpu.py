"""Learning check on one GPU (not a test): AMP, NEAR and Track on the MuJoCo Warp humanoid vs random.

NEAR's ncsn stages train all at once; each rl run starts as soon as it can (AMP and Track at
once, NEAR when its energy model is trained), ``--parallel`` at a time on the GPU, each for
``--budget`` seconds (or until ``--deadline`` seconds into the call), then gets SIGTERM (near's
trainer writes its checkpoint and stops). Each final checkpoint is then evaluated
(``near.training.eval_metrics``, deterministic actions, no early termination, so every episode is
the full 10 s) beside a uniformly random policy (one per seed). Prints a Markdown table of NEAR's
DTW pose error (``mean_dtw_pose_error``, lower is better) and writes it with the JSON to
``--out``, and the policy weights of each algorithm's first run on the first motion
(``<motion>_<algo>0_policy.pth`` beside its ``config.yaml``, for ``near render``).

    python benchmarks/learning_check_humanoid_gpu.py [--motions NEAR/.../amp_humanoid_walk.yaml ...]
        [--seeds 3] [--envs 4096] [--frames 60e6] [--budget 440] [--deadline S] [--parallel 18]
        [--ncsn-iters N] [--combined] [--nonnegative] [--no-eval] [--out DIR] [--import DIR] [--export DIR]

``--motions`` takes NEAR's motion files (a ``.yaml`` list or ``.npy``; runs are named by the stem
without ``amp_humanoid_``) or synthetic clip names. Each rl run trains to ``--frames`` samples, or
until ``--budget`` seconds of this call have passed, whichever comes first.

Run again with the same ``--out`` to train on: every stage resumes from its checkpoint, and the
table counts the budgets of all calls (seconds of training per run). ``--no-eval`` stops after
training (a first call of two on a machine whose calls are limited to ten minutes). Across
separate GPU allocations, ``--export DIR`` writes what a later call needs, small: each run's
policy, value function, normalisers, optimiser, epoch and frame counter and NEAR's annealing state
(not the env's state: a resumed run starts from fresh resets), each energy model's EMA weights and
input normaliser, and the budget so far, as ``resume.tar.NN`` parts of at most 15 MiB; the next
call's ``--import DIR`` unpacks them into ``--out`` first.

Beside the table (``table.md``) go the curves: ``curves.csv`` (run, frames, episode length, DTW
pose error of the training episodes, as logged) and, per run, whether its episode length ever fell
below half its running maximum after reaching 200 steps (a collapse).

``--combined`` passes NEAR's paper reward mix (0.5 task, 0.5 style, as ``sweeps/paper_main.yaml``)
explicitly; the humanoid configs default to it too, so it only pins it against other defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import humanoid_resume_state as resume_state  # noqa: E402
PY = sys.executable
NC = "++train.params.config.near_config"


def spawn(cmd: list[str], log: str) -> subprocess.Popen:
    with open(log, "a") as fh:  # appended: a resumed run keeps its earlier log
        return subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)


# task (alive, forward progress) and style rewards half and half, as paper_main.yaml's runs
REWARD_MIX = "0.5 task + 0.5 style"
COMBINED = {"NEAR": [f"{NC}.inference.task_reward_w=0.5", f"{NC}.inference.energy_reward_w=0.5"],
            "AMP": ["++train.params.config.task_reward_w=0.5", "++train.params.config.disc_reward_w=0.5"]}


def near_overrides(ncsn_dir: str) -> list[str]:
    return [f"{NC}.inference.eb_model_checkpoint={ncsn_dir}/nn/checkpoint.pth",
            f"{NC}.inference.running_mean_std_checkpoint={ncsn_dir}/nn/running_mean_std.pth",
            f"{NC}.inference.sigma_level=-1"]


def motion_name(spec: str) -> str:
    """A run folder's name for a motion: NEAR's file stem without ``amp_humanoid_``."""
    return os.path.splitext(os.path.basename(spec))[0].removeprefix("amp_humanoid_")


def scalar_series(run_dir: str, tags: set[str]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of each tag in a run's event files, by step."""
    from tensorboardX.proto import event_pb2

    from near.training.tblog import _read_records, event_files

    out: dict[str, list[tuple[int, float]]] = {t: [] for t in tags}
    for path in event_files(os.path.join(run_dir, "summaries")):
        for frame in _read_records(path):
            event = event_pb2.Event()
            event.ParseFromString(frame[12:-4])
            for v in event.summary.value:
                if v.tag in out:
                    out[v.tag].append((event.step, v.simple_value))
    return {t: sorted(dict(pts).items()) for t, pts in out.items()}


def collapsed(lengths: list[float], reached: float = 200.0) -> bool:
    """Whether an episode-length curve fell below half its running maximum after reaching `reached`."""
    best = 0.0
    for value in lengths:
        best = max(best, value)
        if best >= reached and value < best / 2:
            return True
    return False


def write_curves(out: str, names: list[str]) -> None:
    """curves.csv (episode length and DTW pose error against frames, per run) and a collapse line per run."""
    rows, notes = ["run,frames,episode_length,mean_dtw_pose_error"], []
    for name in names:
        if not os.path.isdir(f"{out}/{name}/summaries"):
            continue
        series = scalar_series(f"{out}/{name}", {"episode_lengths/step", "mean_dtw_pose_error/step"})
        dtw = dict(series["mean_dtw_pose_error/step"])
        lengths = series["episode_lengths/step"]
        rows += [f"{name},{step},{value:.2f},{dtw.get(step, float('nan')):.4f}" for step, value in lengths]
        if lengths:
            peak = max(v for _, v in lengths)
            fell = "YES" if collapsed([v for _, v in lengths]) else "no"
            notes.append(f"{name}: {lengths[-1][0]:,} frames, episode length {lengths[0][1]:.0f} -> max {peak:.0f} -> "
                         f"last {lengths[-1][1]:.0f}; collapse: {fell}")
    with open(f"{out}/curves.csv", "w") as fh:
        fh.write("\n".join(rows) + "\n")
    with open(f"{out}/curves.md", "w") as fh:
        fh.write("\n".join(notes) + "\n")
    print("\n".join(notes), flush=True)


def keep_policies(out: str, motion: str, algos: list[str]) -> None:
    """The policy weights alone (no optimiser state) of each algorithm's seed-0 run on `motion`,
    small enough to copy off the GPU machine and render with ``near render RUN --checkpoint``."""
    import torch

    for a in algos:
        ckpt = f"{out}/{motion}/{a}0/nn/checkpoint.pth"
        if os.path.isfile(ckpt):
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            torch.save({"model": state["model"]}, f"{out}/{motion}_{a}0_policy.pth")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--motions", nargs="+", default=["amp_humanoid_walk.yaml", "amp_humanoid_crane_pose.yaml"],
                    help="NEAR's motion files (.yaml / .npy; relative ones through $NEAR_MOTION_DIR, e.g. a NEAR "
                         "checkout) or synthetic clip names")
    ap.add_argument("--frames", type=float, default=60e6, help="samples per rl run (>= 100000)")
    ap.add_argument("--import", dest="import_dir", default="", help="unpack resume.tar.NN parts from here first")
    ap.add_argument("--export", default="", help="write the small resume state as resume.tar.NN parts here")
    ap.add_argument("--algos", nargs="+", default=["AMP", "NEAR", "Track"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--envs", type=int, default=4096, help="envs per rl run (NEAR's paper runs: 4096)")
    ap.add_argument("--budget", type=float, default=440.0, help="seconds of training per rl run and call")
    ap.add_argument("--parallel", type=int, default=18, help="rl runs sharing the GPU at once")
    ap.add_argument("--deadline", type=float, default=float("inf"),
                    help="seconds into this call after which every rl run is stopped (a call's time limit)")
    ap.add_argument("--ncsn-iters", type=int, default=0,
                    help="energy-model iterations (0: the config's, NEAR's 100,000)")
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--no-eval", action="store_true", help="stop after training (resume later with the same --out)")
    ap.add_argument("--combined", action="store_true", help="NEAR and AMP: 0.5 task + 0.5 style reward")
    ap.add_argument("--nonnegative", action="store_true", help="NEAR: its energy reward on [0, 1] (ncsn/reward.py)")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--out", default="/tmp/near_learning_check_gpu")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.import_dir:
        resume_state.unpack(args.import_dir, args.out)
    t0 = time.time()
    files = {motion_name(m): m for m in args.motions}
    runs = [(m, a, s) for m in files for a in args.algos for s in range(args.seeds)]

    def rl_cmd(m: str, a: str, s: int) -> list[str]:
        extra = near_overrides(f"{args.out}/{m}/ncsn{s}") if a == "NEAR" else []
        extra += COMBINED.get(a, []) if args.combined else []
        extra += [f"{NC}.inference.nonnegative_energy_reward=True"] if a == "NEAR" and args.nonnegative else []
        return [PY, "-m", "near", "train", "rl", f"task=Humanoid{a}", f"++task.env.motion_file={files[m]}", f"seed={s}",
                # a max_iterations of 100,000 or more is a frame budget
                f"device={args.device}", f"num_envs={args.envs}", f"max_iterations={int(args.frames)}",
                "++train.params.config.print_stats=False", "++train.params.config.save_frequency=0",
                f"run_dir={args.out}/{m}/{a}{s}", *extra]

    # the energy models all at once; an rl run starts as soon as it can (AMP and Track at once, NEAR
    # when its energy model is trained), at most `--parallel` at a time, and is stopped (SIGTERM:
    # checkpoint, exit) `--budget` s after it starts; a finished energy model resumes at its end
    ncsn: dict[tuple, subprocess.Popen] = {}
    for m, a, s in runs:
        os.makedirs(f"{args.out}/{m}", exist_ok=True)
        if a == "NEAR" and (m, s) not in ncsn and not resume_state.is_slim(f"{args.out}/{m}/ncsn{s}"):
            iters = [f"{NC}.training.n_iters={args.ncsn_iters}"] if args.ncsn_iters else []
            ncsn[(m, s)] = spawn([PY, "-m", "near", "train", "ncsn", "task=HumanoidNEAR",
                                  f"++task.env.motion_file={files[m]}", f"seed={s}", f"device={args.device}",
                                  f"run_dir={args.out}/{m}/ncsn{s}", *iters],
                                 f"{args.out}/{m}/ncsn{s}.log")
    codes: dict[tuple, int] = {}
    # wall seconds each run has trained over all calls (its start-up included)
    trained_file = f"{args.out}/budget.json"
    trained: dict[str, float] = json.load(open(trained_file))["seconds"] if os.path.isfile(trained_file) else {}
    pending, running = list(runs), {}
    reported: set[tuple] = set()
    stopped: set[tuple] = set()
    while pending or running:
        for key, proc in ncsn.items():
            if proc.poll() is not None and key not in reported:
                reported.add(key)
                print(f"energy model {key} {'ready' if proc.returncode == 0 else 'FAILED'} after "
                      f"{time.time() - t0:.0f} s", flush=True)
        for key in list(pending):
            m, a, s = key
            energy = ncsn.get((m, s)) if a == "NEAR" else None
            if energy is not None and energy.poll() is not None and energy.returncode != 0:
                pending.remove(key)  # its energy model failed: reported above
            elif time.time() > t0 + args.deadline:
                pending.remove(key)  # no time left in this call: the next call starts it
            elif len(running) < args.parallel and (energy is None or energy.poll() is not None):
                pending.remove(key)
                running[key] = (spawn(rl_cmd(*key), f"{args.out}/{m}/{a}{s}.log"), time.time())
        for key, (proc, started) in list(running.items()):
            late = time.time() > min(started + args.budget, t0 + args.deadline)
            if proc.poll() is None and late and key not in stopped:
                proc.send_signal(signal.SIGTERM)
                stopped.add(key)
            if proc.poll() is not None:
                codes[key] = proc.returncode
                del running[key]
                name = f"{key[0]}/{key[1]}{key[2]}"
                if proc.returncode in (0, 3):  # only a run that stopped cleanly (done, or checkpointed) trained
                    trained[name] = trained.get(name, 0.0) + time.time() - started
                print(f"{name} stopped after {time.time() - started:.0f} s (exit {proc.returncode})", flush=True)
        time.sleep(1)
    for key, proc in ncsn.items():
        if proc.poll() is None:  # out of time: it checkpoints, and the next call resumes it
            proc.send_signal(signal.SIGTERM)
            print(f"energy model {key} stopped unfinished (exit {proc.wait()})", flush=True)
    print(f"rl runs done after {time.time() - t0:.0f} s; exit codes {sorted(set(codes.values()))}", flush=True)
    with open(trained_file, "w") as fh:
        json.dump({"seconds": trained}, fh, indent=1)
    write_curves(args.out, [f"{m}/{a}{s}" for m, a, s in runs])
    if args.export:
        print(f"resume state: {resume_state.pack(args.out, args.export)}", flush=True)
    keep_policies(args.out, next(iter(files)), args.algos)  # small enough to come back from any call
    if args.no_eval:
        return 0

    evals: dict[tuple, subprocess.Popen] = {}
    common = [f"device={args.device}", "num_envs=64", "++task.env.enableEarlyTermination=False"]
    for m in files:
        for s in range(args.seeds):
            evals[(m, "random", s)] = spawn([PY, "-m", "near.training.eval_metrics", "task=HumanoidAMP",
                                             f"++task.env.motion_file={files[m]}", f"seed={s}", *common, "--random",
                                             "--episodes", str(args.episodes), "--out", f"{args.out}/{m}/random{s}.json"],
                                            f"{args.out}/{m}/random{s}.eval.log")
    for (m, a, s), code in codes.items():
        if code not in (0, 3):
            continue
        extra = near_overrides(f"{args.out}/{m}/ncsn{s}") if a == "NEAR" else []
        evals[(m, a, s)] = spawn([PY, "-m", "near.training.eval_metrics", f"task=Humanoid{a}",
                                  f"++task.env.motion_file={files[m]}", f"seed={s}", f"checkpoint={args.out}/{m}/{a}{s}",
                                  *common, *extra,
                                  "--episodes", str(args.episodes), "--out", f"{args.out}/{m}/{a}{s}.json"],
                                 f"{args.out}/{m}/{a}{s}.eval.log")
    results: dict[str, dict] = {}
    for (m, a, s), proc in evals.items():
        if proc.wait() == 0:
            with open(f"{args.out}/{m}/{a}{s}.json") as fh:
                results[f"{m}/{a}{s}"] = json.load(fh)
        else:
            print(f"evaluation of {m}/{a}{s} failed", flush=True)

    lines = [f"DTW pose error (mean_dtw_pose_error, lower is better), deterministic policy, {args.episodes} "
             f"full episodes per run; rl: {args.envs} envs each, {args.parallel} runs at a time on one GPU, "
             f"{min(trained.values(), default=0):.0f}-{max(trained.values(), default=0):.0f} s of training "
             f"each (wall, start-up included), at most {args.frames:.3g} frames; ncsn "
             f"{args.ncsn_iters or 'the config'} iterations; "
             f"{REWARD_MIX if args.combined else 'the configs default'} reward"
             f"{' (NEAR: energy reward on [0, 1])' if args.nonnegative else ''}", "",
             "| motion | algorithm | runs | DTW per seed | mean | ratio to random | diverged episodes |",
             "|---" * 7 + "|"]
    for m in files:
        rand = None
        for a in ["random", *args.algos]:
            found = [results[f"{m}/{a}{s}"] for s in range(args.seeds) if f"{m}/{a}{s}" in results]
            if not found:
                lines.append(f"| {m} | {a} | 0 | failed | - | - | - |")
                continue
            vals = [r["mean_dtw_pose_error"] for r in found]
            mean = sum(vals) / len(vals)
            rand = mean if a == "random" else rand
            ratio = f"{mean / rand:.2f}" if rand else "-"
            lines.append(f"| {m} | {a} | {len(vals)} | {', '.join(f'{v:.3f}' for v in vals)} | {mean:.3f} | {ratio} | "
                         f"{sum(int(r.get('diverged_episodes', 0)) for r in found)} |")
    table = "\n".join(lines)
    print(table, flush=True)
    with open(f"{args.out}/table.md", "w") as fh:
        fh.write(table + "\n")
    with open(f"{args.out}/results.json", "w") as fh:
        json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
