"""The field's aggregate statistics over (runs x tasks) score matrices, after rliable
(Agarwal et al., NeurIPS 2021): IQM / mean / median / optimality gap with stratified bootstrap
confidence intervals, performance profiles and probability of improvement. PURE: arrays in, arrays out.

The definitions, the resampling and the draws are rliable 1.2's: a stratified bootstrap resamples
runs with replacement within each task (``choice(runs, (runs, tasks))`` per replicate from a legacy
``RandomState``), independently per algorithm for the probability of improvement, and percentile
intervals are ``np.percentile`` of the replicates -- so with the same seed the numbers equal
rliable's (tests/test_report_aggregates.py checks them against rliable itself). rliable is not
called at run time: 1.2 pins ``arch<8``, which does not import next to pandas 3, and with arch 8
its bootstrap fails (arch 8 takes its ``random_state=None`` argument for data). Replicates are
computed vectorised here rather than one Python call each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from near.errors import NearError

METRICS = ("iqm", "mean", "median", "optimality_gap")


def _iqm(flat: np.ndarray) -> np.ndarray:
    """25% trimmed mean along the last axis (scipy.stats.trim_mean's cut: int(0.25 * n) each end)."""
    n = flat.shape[-1]
    cut = int(0.25 * n)
    part = np.partition(flat, (cut, n - cut - 1), axis=-1)  # cut <= n / 4: the middle is never empty
    return part[..., cut : n - cut].mean(axis=-1)


def aggregate(scores: np.ndarray, metric: str, gamma: float = 1.0) -> np.ndarray:
    """`metric` of (..., runs, tasks) score matrices: IQM over all runs and tasks; mean or median
    of the per-task means; optimality gap ``gamma - mean(min(scores, gamma))``."""
    scores = np.asarray(scores, dtype=np.float64)
    if metric == "iqm":
        return _iqm(scores.reshape(scores.shape[:-2] + (-1,)))
    if metric == "mean":
        return scores.mean(axis=-2).mean(axis=-1)
    if metric == "median":
        return np.median(scores.mean(axis=-2), axis=-1)
    if metric == "optimality_gap":
        return gamma - np.minimum(scores, gamma).reshape(scores.shape[:-2] + (-1,)).mean(axis=-1)
    raise NearError(f"unknown aggregate metric {metric!r} (known: {', '.join(METRICS)})")


def stratified_resamples(scores: np.ndarray, reps: int, rs: np.random.RandomState) -> np.ndarray:
    """(reps, runs, tasks): runs drawn with replacement within each task, one draw per replicate."""
    n, m = scores.shape
    idx = np.stack([rs.choice(n, (n, m), replace=True) for _ in range(reps)])
    return scores[idx, np.arange(m)[None, None, :]]


def _interval(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(replicates, [100 * alpha, 100 * (1.0 - alpha)], axis=0)
    return lo, hi


def interval_estimates(scores: dict[str, np.ndarray], metrics: tuple[str, ...] = ("iqm",), level: float = 0.95,
                       reps: int = 2000, seed: int = 0) -> dict[str, dict[str, tuple[float, float, float]]]:
    """{group: {metric: (point, ci_low, ci_high)}}: each metric over a group's (runs x tasks) matrix,
    with a percentile stratified-bootstrap CI; each group's replicates start from the same seed."""
    out = {}
    for g, mat in scores.items():
        boot = stratified_resamples(np.asarray(mat, np.float64), reps, np.random.RandomState(seed))
        out[g] = {}
        for m in metrics:
            lo, hi = _interval(aggregate(boot, m), level)
            out[g][m] = (float(aggregate(mat, m)), float(lo), float(hi))
    return out


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of all (run, task) scores above each tau, for (..., runs, tasks) matrices."""
    flat = np.sort(np.asarray(scores, np.float64).reshape(np.shape(scores)[:-2] + (-1,)), axis=-1)
    n = flat.shape[-1]
    taus = np.asarray(taus, np.float64)
    above = n - np.stack([np.searchsorted(row, taus, side="right") for row in flat.reshape(-1, n)])
    return (above / n).reshape(flat.shape[:-1] + (len(taus),))


def performance_profiles(scores: dict[str, np.ndarray], taus: np.ndarray, level: float = 0.95, reps: int = 2000,
                         seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{group: (fraction of runs scoring above each tau, ci_low, ci_high)} (run-score distributions)."""
    out = {}
    for g, mat in scores.items():
        boot = stratified_resamples(np.asarray(mat, np.float64), reps, np.random.RandomState(seed))
        lo, hi = _interval(score_distribution(boot, taus), level)
        out[g] = (score_distribution(mat, taus), lo, hi)
    return out


def improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) averaged over tasks, ties counting half (the Mann-Whitney U of x over y, divided by
    runs_x * runs_y), for (..., runs, tasks) matrices x and y."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    diff = x[..., :, None, :] - y[..., None, :, :]  # (..., runs_x, runs_y, tasks)
    wins = (diff > 0).sum(axis=(-3, -2)) + 0.5 * (diff == 0).sum(axis=(-3, -2))
    return (wins / (x.shape[-2] * y.shape[-2])).mean(axis=-1)


def probability_of_improvement(scores: dict[str, np.ndarray], pairs: list[tuple[str, str]], level: float = 0.95,
                               reps: int = 2000, seed: int = 0) -> dict[tuple[str, str], tuple[float, float, float]]:
    """{(x, y): (P(X > Y), ci_low, ci_high)}; the runs of x and of y are resampled independently
    within each task (per replicate: x's draw, then y's)."""
    out = {}
    for a, b in pairs:
        x, y = np.asarray(scores[a], np.float64), np.asarray(scores[b], np.float64)
        rs = np.random.RandomState(seed)
        bx, by = [], []
        for _ in range(reps):
            bx.append(rs.choice(x.shape[0], x.shape, replace=True))
            by.append(rs.choice(y.shape[0], y.shape, replace=True))
        bx = x[np.stack(bx), np.arange(x.shape[1])[None, None, :]]
        by = y[np.stack(by), np.arange(y.shape[1])[None, None, :]]
        lo, hi = _interval(improvement(bx, by), level)
        out[(a, b)] = (float(improvement(x, y)), float(lo), float(hi))
    return out


@dataclass
class ScoreMatrices:
    """Per group a (runs x tasks) matrix of final scores, ready for rliable, and how it was built."""

    scores: dict[str, np.ndarray]
    tasks: list[str]
    normalized: bool
    oriented: bool  # scores negated so that higher is better (a lower-is-better tag, not normalised)
    warnings: list[str]


def normalize(values: np.ndarray, expert: float, random: float) -> np.ndarray:
    """(x - random) / (expert - random): 0 at the random reference, 1 at the expert's."""
    if expert == random:
        raise NearError(f"expert and random references are equal ({expert}); cannot normalise")
    return (np.asarray(values, dtype=np.float64) - random) / (expert - random)


def score_matrices(per_run: pd.DataFrame, group: str, task: str | None, references: dict | None = None,
                   higher_is_better: bool = True) -> ScoreMatrices:
    """Build rliable's inputs from one row per run (columns `group`, `task`, ``final``).

    Runs with a missing final are left out. Every group needs every task with the same number of
    runs per task (rliable's matrices are rectangular): a group missing a task is left out, and
    extra runs of a task are cut to the smallest count (each with a warning). `references`
    {task: (expert, random)} covering every task normalises the scores; otherwise they stay raw.
    """
    warnings: list[str] = []
    frame = per_run[np.isfinite(per_run["final"].to_numpy(dtype=np.float64))]
    tasks = sorted({str(t) for t in frame[task]}) if task else ["all"]
    task_of = frame[task].astype(str) if task else pd.Series("all", index=frame.index)
    refs = references or {}
    normalized = bool(refs) and all(t in refs for t in tasks)
    scores = {}
    for g in sorted({str(v) for v in frame[group]}):
        sel = frame[group].astype(str) == g
        cols = [frame.loc[sel & (task_of == t), "final"].to_numpy(dtype=np.float64) for t in tasks]
        missing = [t for t, c in zip(tasks, cols) if not len(c)]
        if missing:
            warnings.append(f"{group} {g}: no finished run on {task} {', '.join(missing)}; left out of the aggregates")
            continue
        n = min(len(c) for c in cols)
        if any(len(c) != n for c in cols):
            counts = ", ".join(f"{t}: {len(c)}" for t, c in zip(tasks, cols))
            warnings.append(f"{group} {g}: unequal runs per {task} ({counts}); the aggregates use the first {n} of each")
        mat = np.stack([c[:n] for c in cols], axis=1)
        if normalized:
            mat = np.stack([normalize(mat[:, k], *refs[t]) for k, t in enumerate(tasks)], axis=1)
        scores[g] = mat
    oriented = not normalized and not higher_is_better
    if oriented:
        scores = {g: -m for g, m in scores.items()}
    return ScoreMatrices(scores, tasks, normalized, oriented, warnings)
