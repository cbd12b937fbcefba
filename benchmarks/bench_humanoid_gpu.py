"""Humanoid on one NVIDIA GPU (MuJoCo Warp): end-to-end NEAR and AMP training samples/s.

    python benchmarks/bench_humanoid_gpu.py [--envs 16384] [--iterations 12] [--motions FILE] [--device cuda:0]

First the raw MuJoCo Warp rate: physics steps/s of the backend alone (all envs as worlds of one
model, 4 steps per CUDA graph launch, random PD targets), and control steps/s of near's
HumanoidEnv on it (observation, rewards, metrics, resets included). Then ``near train rl`` with
``task=HumanoidAMP`` and ``task=HumanoidNEAR`` (energy model from a short ``near train ncsn``; the
reward's quality does not change the cost) at ``--envs`` envs: samples/s are the trainer's frame
counter over the event files' wall times, epoch by epoch after the first (kernel compilation,
CUDA graph capture), and their median is reported. Prints LAST NEAR's median samples/s as a ratio
to the raw MuJoCo Warp control-step rate measured in the same run (physics steps/s / 4: the
anchor, what the simulator alone could deliver), after the median seconds per epoch of rl-games'
timers (env steps, rollout, PPO update).

To find where the time goes instead: ``--profile N`` (torch.profiler and cProfile of N env steps),
``--profile-train`` (the same over the training runs) and ``--sync-sites N`` (every call site that
makes the host wait for the GPU, counted over N env steps and the training runs).

Without a CUDA device it says so and exits 77 (skipped), unless ``--device cpu`` is given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

#: exit status of a benchmark that cannot run here (no GPU); `make bench` reports it and goes on
SKIPPED = 77

TIMES = {"performance/step_time": "env steps", "performance/step_inference_time": "rollout (env, policy, reward)",
         "performance/rl_update_time": "PPO update"}


def epoch_rates(run_dir: str) -> tuple[list[float], dict[str, float]]:
    """Samples/s of each epoch after the first, from the trainer's frame counter and wall times, and
    the median seconds per epoch of rl-games' own timers (:data:`TIMES`) over the same epochs."""
    from tensorboardX.proto import event_pb2

    from near.training.tblog import _read_records, event_files

    points, times = [], {tag: [] for tag in TIMES}
    for path in event_files(os.path.join(run_dir, "summaries")):
        for frame in _read_records(path):
            event = event_pb2.Event()
            event.ParseFromString(frame[12:-4])
            for v in event.summary.value:
                if v.tag == "losses/a_loss":
                    points.append((event.step, event.wall_time))
                elif v.tag in times:
                    times[v.tag].append((event.step, v.simple_value))
    points.sort()
    rates = [(f1 - f0) / (t1 - t0) for (f0, t0), (f1, t1) in zip(points, points[1:]) if t1 > t0]
    medians = {tag: statistics.median(v for _, v in sorted(vals)[1:]) for tag, vals in times.items() if len(vals) > 1}
    return rates, medians


def _stage_ok(stage: str, code: int) -> None:
    if code != 0:  # 3: stopped by a signal (a caller's time limit), 2: a settings error
        raise SystemExit(f"near: error: the benchmark's {stage} stage exited {code}; no rate measured")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_rates(num_envs: int, steps: int, device: torch.device, motions: str) -> tuple[float, float]:
    """(physics steps/s of the bare backend, control steps/s of HumanoidEnv), all envs counted."""
    from near.training.envs.humanoid.env import PHYSICS_STEPS, HumanoidEnv, HumanoidEnvConfig

    env = HumanoidEnv(HumanoidEnvConfig(num_envs=num_envs, motion_file=motions, backend="mujoco_warp"),
                      device=device, seed=0)
    env.reset()
    gen = torch.Generator(device=device).manual_seed(0)
    actions = torch.rand(steps, num_envs, env.action_dim, generator=gen, device=device) * 0.6 - 0.3
    ctrl = env.pd_offset.to(device) + env.pd_scale.to(device) * actions
    sim = env.sim
    sim.step(ctrl[0], PHYSICS_STEPS)  # capture the graph outside the timing
    _sync(device)
    start = time.perf_counter()
    for t in range(steps):
        sim.step(ctrl[t], PHYSICS_STEPS)
    _sync(device)
    physics = num_envs * steps * PHYSICS_STEPS / (time.perf_counter() - start)

    env.reset()
    env.step(actions[0])
    _sync(device)
    start = time.perf_counter()
    for t in range(steps):
        env.step(actions[t])
    _sync(device)
    control = num_envs * steps / (time.perf_counter() - start)
    return physics, control


def profile_env(num_envs: int, steps: int, device: torch.device, motions: str) -> None:
    """Where a HumanoidEnv step spends its time: torch.profiler's top ops by CPU and by GPU time."""
    from torch.profiler import ProfilerActivity, profile

    from near.training.envs.humanoid.env import HumanoidEnv, HumanoidEnvConfig

    env = HumanoidEnv(HumanoidEnvConfig(num_envs=num_envs, motion_file=motions, backend="mujoco_warp"),
                      device=device, seed=0)
    env.reset()
    gen = torch.Generator(device=device).manual_seed(0)
    actions = torch.rand(steps, num_envs, env.action_dim, generator=gen, device=device) * 0.6 - 0.3
    for t in range(min(steps, 10)):
        env.step(actions[t])
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for t in range(steps):
            env.step(actions[t])
        _sync(device)
    table = prof.key_averages()
    print(table.table(sort_by="cpu_time_total", row_limit=40), flush=True)
    if device.type == "cuda":
        print(table.table(sort_by="self_cuda_time_total", row_limit=25), flush=True)
    import cProfile
    import pstats

    with cProfile.Profile() as py_prof:
        for t in range(steps):
            env.step(actions[t])
        _sync(device)
    pstats.Stats(py_prof).sort_stats("tottime").print_stats(30)


def profile_training(stage, overrides: list[str]) -> None:
    """Where a training run spends its time: torch.profiler (CPU and CUDA, every kernel, MuJoCo
    Warp's included) and cProfile (Python; waits for the GPU show as time in the op that syncs)."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, cProfile.Profile() as py_prof:
        _stage_ok("profiled rl", stage(overrides))
    table = prof.key_averages()
    print(table.table(sort_by="self_cuda_time_total", row_limit=30), flush=True)
    print(table.table(sort_by="self_cpu_time_total", row_limit=30), flush=True)
    pstats.Stats(py_prof).sort_stats("tottime").print_stats(40)
    pstats.Stats(py_prof).sort_stats("cumtime").print_stats(40)


def sync_sites(fn) -> None:
    """Run `fn` with torch's CUDA sync debugging on and print each call site (near's and rl-games'
    frames) that made the host wait for the GPU, with its count, most frequent first."""
    import collections
    import traceback
    import warnings

    sites: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if "/near/" in f.filename or "rl_games" in f.filename]
        sites[" <- ".join(f"{f.filename.split('/')[-1]}:{f.lineno}" for f in frames[::-1][:4]) or filename] += 1

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():  # restores warnings.showwarning on the way out
            warnings.simplefilter("always")
            warnings.showwarning = record
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for site, count in sites.most_common(40):
        print(f"{count:>6}  {site}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--envs", type=int, default=16384)
    parser.add_argument("--iterations", type=int, default=12,
                        help="rl epochs per algorithm (the first is not timed; at least 11 for a median of 10)")
    parser.add_argument("--motions", default="walk",
                        help="task.env.motion_file: NEAR's amp_humanoid_walk.yaml, or a synthetic motion's name")
    parser.add_argument("--raw-steps", type=int, default=200, help="control steps of the raw-rate loops")
    parser.add_argument("--ncsn-iters", type=int, default=200)
    parser.add_argument("--algos", nargs="+", default=["AMP", "NEAR"], choices=["AMP", "NEAR"])
    parser.add_argument("--extra", default="", help="more overrides, space separated")
    parser.add_argument("--work", default="", help="run directories here (default: a new temporary one)")
    parser.add_argument("--raw-envs", type=int, nargs="*", default=[],
                        help="also print the raw rates at these env counts (how they scale)")
    parser.add_argument("--profile", type=int, default=0,
                        help="profile this many HumanoidEnv steps (torch.profiler, top ops) and stop")
    parser.add_argument("--sync-sites", type=int, default=0,
                        help="list the call sites that wait for the GPU in this many HumanoidEnv steps and in "
                             "the training runs (their --iterations), then stop")
    parser.add_argument("--profile-train", action="store_true",
                        help="profile the training runs (torch.profiler and cProfile) instead of timing them")
    args = parser.parse_args()

    from near.training.entry import train_ncsn_stage, train_rl_stage
    from near.training.envs.humanoid.env import PHYSICS_STEPS

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"near: no CUDA device here: the GPU benchmark is skipped (it measures MuJoCo Warp on {args.device}; "
              "`--device cpu --envs 64` runs it small on the CPU)", flush=True)
        sys.exit(SKIPPED)
    if args.profile:
        profile_env(args.envs, args.profile, device, args.motions)
        return
    if args.sync_sites:
        from near.training.envs.humanoid.env import HumanoidEnv, HumanoidEnvConfig

        env = HumanoidEnv(HumanoidEnvConfig(num_envs=args.envs, motion_file=args.motions, backend="mujoco_warp"),
                          device=device, seed=0)
        env.reset()
        acts = torch.rand(args.sync_sites + 5, args.envs, env.action_dim, device=device) * 0.6 - 0.3
        for t in range(5):
            env.step(acts[t])
        print(f"call sites waiting for the GPU in {args.sync_sites} HumanoidEnv steps:", flush=True)
        sync_sites(lambda: [env.step(a) for a in acts[5:]])
        del env
    physics = 0.0
    for n in args.raw_envs:
        p, c = raw_rates(n, args.raw_steps, device, args.motions)
        print(f"{n:>6} envs: raw MuJoCo Warp {p:,.0f} physics steps/s; HumanoidEnv {c:,.0f} control steps/s", flush=True)
    if not (args.profile_train or args.sync_sites):
        physics, control = raw_rates(args.envs, args.raw_steps, device, args.motions)
        print(f"raw MuJoCo Warp: {physics:,.0f} physics steps/s; near HumanoidEnv: {control:,.0f} control steps/s "
              f"(= samples/s without learning; {args.envs} envs, {args.device})", flush=True)

    work = args.work or tempfile.mkdtemp(prefix="near-bench-humanoid-")
    os.environ.setdefault("NEAR_CACHE_DIR", os.path.join(work, "cache"))
    common = [f"device={args.device}", f"num_envs={args.envs}", f"max_iterations={args.iterations}",
              f"++task.env.motion_file={args.motions}", "++train.params.config.print_stats=False",
              "++train.params.config.save_frequency=0", *args.extra.split()]
    rates: dict[str, float] = {}
    for algo in args.algos:
        extra: list[str] = []
        if algo == "NEAR":
            nc = "++train.params.config.near_config"
            _stage_ok("ncsn", train_ncsn_stage(["task=HumanoidNEAR", f"++task.env.motion_file={args.motions}",
                                                f"run_dir={work}/ncsn", f"device={args.device}",
                                                f"{nc}.training.n_iters={args.ncsn_iters}"]))
            extra = [f"{nc}.inference.eb_model_checkpoint={work}/ncsn/nn/checkpoint.pth",
                     f"{nc}.inference.running_mean_std_checkpoint={work}/ncsn/nn/running_mean_std.pth",
                     f"{nc}.inference.sigma_level=-1"]
        overrides = [f"task=Humanoid{algo}", f"run_dir={work}/{algo}", *common, *extra]
        if args.sync_sites:
            print(f"call sites waiting for the GPU in a {algo} run of {args.iterations} epochs:", flush=True)
            sync_sites(lambda: _stage_ok(f"rl {algo}", train_rl_stage(overrides)))
            continue
        if args.profile_train:
            profile_training(train_rl_stage, overrides)
            continue
        start = time.perf_counter()
        _stage_ok(f"rl {algo}", train_rl_stage(overrides))
        total = time.perf_counter() - start
        per_epoch, timers = epoch_rates(f"{work}/{algo}")
        rates[algo] = statistics.median(per_epoch)
        print(f"{algo}: median {rates[algo]:,.0f} samples/s over {len(per_epoch)} timed epochs "
              f"(min {min(per_epoch):,.0f}, "
              f"max {max(per_epoch):,.0f}; {args.envs} envs, {args.device}; whole run {total:.0f} s)", flush=True)
        print(f"{algo}: median seconds per epoch, " + ", ".join(f"{TIMES[t]} {v:.3f}" for t, v in timers.items()),
              flush=True)
    if args.profile_train or args.sync_sites:
        return
    raw_control = physics / PHYSICS_STEPS
    print(f"raw MuJoCo Warp beside them: {physics:,.0f} physics steps/s = {raw_control:,.0f} control steps/s",
          flush=True)
    algo = "NEAR" if "NEAR" in rates else args.algos[0]
    print(f"{algo} samples/s on the MuJoCo Warp humanoid, {args.envs} envs on {args.device}: {rates[algo]:,.0f} "
          f"= {rates[algo] / raw_control:.2f}x the raw MuJoCo Warp control-step rate {raw_control:,.0f}")


if __name__ == "__main__":
    main()
