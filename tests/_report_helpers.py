"""Builders of small, real experiment folders (tensorboard event files + job frames) for report tests."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pandas as pd


def write_run(run_dir: Path, series: dict[str, tuple[list[int], list[float]]]) -> Path:
    """Write `series` {tag: (steps, values)} with torch's SummaryWriter into run_dir/summaries; return the file."""
    from torch.utils.tensorboard import SummaryWriter

    summaries = Path(run_dir) / "summaries"
    writer = SummaryWriter(str(summaries))
    events = sorted((s, tag, v) for tag, (steps, vals) in series.items() for s, v in zip(steps, vals))
    for step, tag, value in events:
        writer.add_scalar(tag, value, step)
    writer.close()
    return Path(sorted(glob.glob(str(summaries / "events.out.tfevents.*")), key=os.path.getmtime)[-1])


def curve(algorithm: str, motion: str, seed: int, steps: np.ndarray) -> np.ndarray:
    """Deterministic learning curve: level by algorithm, noise by seed."""
    level = {"NEAR": 1.0, "AMP": 0.8, "Track": 0.6, "PPO": 0.3}.get(algorithm, 0.5)
    level *= 1.0 if motion == "circle" else 0.7
    rng = np.random.default_rng(seed * 7919 + len(algorithm) + len(motion))
    return level * (1 - np.exp(-steps / (steps.max() / 3 + 1))) * 100 + rng.normal(0, 3, len(steps))


def make_experiment(exp: Path, algorithms=("NEAR", "AMP", "Track", "PPO"), motions=("circle", "figure8"),
                    seeds=(1, 2, 3), n_steps: int = 30, ablations: tuple | None = None) -> pd.DataFrame:
    """A demo-like sweep: one rl run per algorithm x motion x seed (x ablation); returns its job frame."""
    rows = []
    for alg in algorithms:
        for motion in motions:
            for seed in seeds:
                for abl in ablations or (None,):
                    job_id = f"{alg}-{motion}-{seed}" + (f"-{abl}" if abl else "")
                    run_dir = (exp / "runs" / job_id).resolve()
                    # algorithms log at different rates, so alignment is exercised
                    stride = {"NEAR": 100, "AMP": 150}.get(alg, 120)
                    steps = np.arange(n_steps) * stride
                    vals = curve(alg, motion, seed + (hash(abl) % 5 if abl else 0), steps)
                    # the tags the training core logs (near.training.tags, near.metrics.TAGS)
                    series = {"rewards/step": (steps.tolist(), vals.tolist()),
                              "dtw_error/step": (steps.tolist(), (100 - vals).tolist()),
                              "sparc/step": (steps.tolist(), (-2 - vals / 100).tolist())}
                    write_run(run_dir, series)
                    row = {"job_id": job_id, "stage": "rl", "state": "done", "run_dir": str(run_dir),
                           "algorithm": alg, "motion": motion, "seed": seed}
                    if ablations:
                        row["ablation"] = abl
                    rows.append(row)
    return pd.DataFrame(rows)


def write_run_tbx(run_dir: Path, series: dict[str, tuple[list[int], list[float]]]) -> None:
    """Write `series` {tag: (steps, values)} with tensorboardX (rl-games' writer) into run_dir/summaries."""
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(Path(run_dir) / "summaries"))
    for tag, (steps, values) in series.items():
        for s, v in zip(steps, values):
            writer.add_scalar(tag, v, s)
    writer.close()


def make_near_layout(root: Path, algorithms=("HumanoidNEAR", "HumanoidAMP"), motions=("walk", "spin_kick"),
                     seeds=(1, 2, 3), n_steps: int = 20) -> dict[tuple[str, str, int], np.ndarray]:
    """Run dirs as NEAR saves them (``{algorithm}_{motion}_{seed}/summaries/events...`` plus the
    IsaacGymEnvs ``config.yaml``), written by tensorboardX; returns {(alg, motion, seed): rewards}."""
    import yaml

    values = {}
    steps = (np.arange(n_steps) * 50).tolist()
    for alg in algorithms:
        for motion in motions:
            for seed in seeds:
                run = Path(root) / f"{alg}_{motion}_{seed}"
                vals = curve("NEAR" if "NEAR" in alg else "AMP", "circle" if motion == "walk" else "x", seed,
                             np.asarray(steps, dtype=float))
                write_run_tbx(run, {"rewards/iter": (steps, vals.tolist()),
                                    "episode_lengths/iter": (steps, (vals / 2).tolist())})
                (run / "config.yaml").write_text(yaml.safe_dump(
                    {"seed": seed, "task": {"name": alg, "env": {"motion_file": f"amp_humanoid_{motion}.npy"}}}))
                values[(alg, motion, seed)] = vals
    return values
