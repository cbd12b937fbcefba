"""Statistics across runs (PURE: numpy/pandas in, numpy/pandas out, no I/O).

rliable-style small functions: align runs on a common step grid, smooth, aggregate (mean,
interquartile mean), percentile-bootstrap confidence intervals with a seeded generator, and
final-performance summaries. Curves are (runs x grid) matrices with NaN where a run has no data
(e.g. it has not reached that step yet): aggregates use the runs present at each grid point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Tensorboard-style debiased exponential moving average; ``weight`` in [0, 1), 0 = none.

    NaNs are skipped (they stay NaN and do not reset the average).
    """
    values = np.asarray(values, dtype=np.float64)
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    if weight == 0.0 or values.size == 0:
        return values.copy()
    out = np.full_like(values, np.nan)
    last, n = 0.0, 0
    for i, v in enumerate(values):
        if np.isnan(v):
            continue
        last = last * weight + (1.0 - weight) * v
        n += 1
        out[i] = last / (1.0 - weight**n)
    return out


def step_grid(run_steps: list[np.ndarray], points: int | None = 200, truncate: bool = False) -> np.ndarray:
    """A common step grid for runs whose logging steps may differ.

    When every run logged the same steps and there are at most `points` of them, the grid is
    exactly those steps. Otherwise it is `points` evenly spaced steps from the earliest first step
    to the latest last step -- or, only with ``truncate=True``, to the shortest run's last step.
    """
    run_steps = [np.asarray(s) for s in run_steps if len(s)]
    if not run_steps:
        return np.zeros(0)
    first = run_steps[0]
    same = all(len(s) == len(first) and np.array_equal(s, first) for s in run_steps[1:])
    lo = min(float(s.min()) for s in run_steps)
    hi = min(float(s.max()) for s in run_steps) if truncate else max(float(s.max()) for s in run_steps)
    if same and (points is None or len(first) <= points):
        grid = np.unique(first).astype(np.float64)
        return grid[grid <= hi]
    if points is None:
        grid = np.unique(np.concatenate(run_steps)).astype(np.float64)
        return grid[(grid >= lo) & (grid <= hi)]
    if hi <= lo:
        return np.array([lo])
    return np.linspace(lo, hi, points)


def align(steps: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of one run onto `grid`; NaN outside the run's logged range.

    Duplicate steps keep their last value. Never extrapolates: a run that stopped early is
    missing (NaN) at later grid points rather than flattened or truncated.
    """
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(values)
    steps, values = steps[keep], values[keep]
    if steps.size == 0:
        return np.full(len(grid), np.nan)
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    last = np.r_[steps[1:] != steps[:-1], True]
    steps, values = steps[last], values[last]
    out = np.interp(grid, steps, values)
    out[(grid < steps[0]) | (grid > steps[-1])] = np.nan
    return out


def iqm(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean (mean of the middle 50%, trimming floor(n/4) from each end), NaN-aware.

    Same convention as rliable / scipy.stats.trim_mean(x, 0.25).
    """
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, 0)
    srt = np.sort(x, axis=0)  # NaNs sort last
    n = (~np.isnan(x)).sum(axis=0)
    cut = n // 4
    pos = np.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
    mask = (pos >= cut) & (pos < n - cut)
    total = np.where(mask, np.nan_to_num(srt), 0.0).sum(axis=0)
    count = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def nanmean(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean ignoring NaNs; NaN (without a warning) where nothing is present."""
    x = np.asarray(x, dtype=np.float64)
    n = (~np.isnan(x)).sum(axis=axis)
    total = np.nansum(x, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


AGGREGATES = {"mean": nanmean, "iqm": iqm}


def bootstrap_ci(
    samples: np.ndarray,
    statistic: str = "mean",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap CI of `statistic` over axis 0 (runs); one interval per column.

    Resamples whole runs with replacement (``n_boot`` times, generator seeded with `seed`).
    With a single run the interval collapses to its value.
    """
    x = np.asarray(samples, dtype=np.float64)
    squeeze = x.ndim == 1
    if squeeze:
        x = x[:, None]
    stat = AGGREGATES[statistic]
    n = x.shape[0]
    if n == 0:
        nan = np.full(x.shape[1:], np.nan)
        return (nan[0], nan[0]) if squeeze else (nan, nan)
    if n == 1:  # every resample is the one run: no need to draw them
        one = x[0].copy()
        return (one[0], one[0].copy()) if squeeze else (one, one.copy())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    if statistic == "mean":
        # The mean of a resample is (how often each run was drawn) @ values / draws: one matrix
        # product instead of materialising n_boot x runs x columns (same resamples as below).
        flat = (np.arange(n_boot)[:, None] * n + idx).ravel()
        counts = np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
        present = ~np.isnan(x)
        with np.errstate(invalid="ignore", divide="ignore"):
            # einsum's own loops, not BLAS: a threaded BLAS on a busy machine is slower for these sizes
            boot = np.einsum("bn,nc->bc", counts, np.where(present, x, 0.0)) / np.einsum(
                "bn,nc->bc", counts, present.astype(np.float64))
        return _quantiles(boot, level, squeeze)
    # Resample in blocks so that (block x runs x columns) stays a few million numbers.
    block = max(1, 4_000_000 // max(1, n * x.shape[1]))
    boot = np.concatenate([stat(x[idx[i : i + block]], axis=1) for i in range(0, n_boot, block)])
    return _quantiles(boot, level, squeeze)


def _quantiles(boot: np.ndarray, level: float, squeeze: bool):
    """Percentile interval per column of bootstrap statistics (n_boot, columns); NaN where empty."""
    alpha = (1.0 - level) / 2.0
    lo = np.full(boot.shape[1], np.nan)
    hi = np.full(boot.shape[1], np.nan)
    finite = np.isfinite(boot)
    full = finite.all(axis=0)  # the common case: plain (fast) quantiles
    if full.any():
        q = np.quantile(boot[:, full], [alpha, 1.0 - alpha], axis=0)
        lo[full], hi[full] = q[0], q[1]
    part = finite.any(axis=0) & ~full  # some resamples missing: NaN-aware; none present: stays NaN
    if part.any():
        lo[part] = np.nanquantile(boot[:, part], alpha, axis=0)
        hi[part] = np.nanquantile(boot[:, part], 1.0 - alpha, axis=0)
    if squeeze:
        return lo[0], hi[0]
    return lo, hi


@dataclass
class Curve:
    """Aggregate learning curve of one group of runs."""

    grid: np.ndarray
    center: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray  # runs present at each grid point
    runs: list[str]


def split_runs(run: np.ndarray, step: np.ndarray, value: np.ndarray) -> dict:
    """{run: (steps, values)} sorted by step, from parallel arrays (one lexsort, no per-row Python)."""
    run, step, value = np.asarray(run), np.asarray(step), np.asarray(value)
    if run.size == 0:
        return {}
    order = np.lexsort((step, run))
    run, step, value = run[order], step[order], value[order]
    cuts = np.flatnonzero(run[1:] != run[:-1]) + 1
    return {r[0]: (s, v) for r, s, v in zip(np.split(run, cuts), np.split(step, cuts), np.split(value, cuts))}


def series_matrix(
    series: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray | None = None, points: int | None = 200,
    truncate: bool = False, smoothing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(grid, runs x grid matrix) from per-run (steps, values) sorted by step.

    Smoothing (EMA) is applied to each run on its own logged steps, before interpolation.
    """
    if grid is None:
        grid = step_grid([s for s, _ in series], points=points, truncate=truncate)
    rows = [align(s, ema(v, smoothing) if smoothing else v, grid) for s, v in series]
    return grid, (np.vstack(rows) if rows else np.zeros((0, len(grid))))


def run_matrix(
    frame: pd.DataFrame, grid: np.ndarray | None = None, points: int | None = 200, truncate: bool = False,
    smoothing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(grid, runs x grid matrix, run names) for the rows of ONE tag in `frame` (columns run, step, value)."""
    per_run = split_runs(frame["run"].astype(str).to_numpy(), frame["step"].to_numpy(), frame["value"].to_numpy())
    names = sorted(per_run)
    grid, mat = series_matrix([per_run[n] for n in names], grid, points, truncate, smoothing)
    return grid, mat, names


def aggregate_curve(
    grid: np.ndarray, mat: np.ndarray, runs: list[str], statistic: str = "mean", level: float = 0.95,
    n_boot: int = 2000, seed: int = 0,
) -> Curve:
    """Center line (mean or IQM over runs) and its bootstrap CI at every grid point."""
    center = AGGREGATES[statistic](mat, axis=0)
    low, high = bootstrap_ci(mat, statistic, level, n_boot, seed)
    return Curve(grid, center, low, high, (~np.isnan(mat)).sum(axis=0), runs)


def mean_std_curve(grid: np.ndarray, mat: np.ndarray, runs: list[str]) -> Curve:
    """NEAR's plotter: mean over runs and a band of one (population) standard deviation around it."""
    center = nanmean(mat, axis=0)
    n = (~np.isnan(mat)).sum(axis=0)
    with np.errstate(invalid="ignore"):
        dev = np.sqrt(nanmean((mat - center) ** 2, axis=0))
    return Curve(grid, center, center - dev, center + dev, n, runs)


def final_values(frame: pd.DataFrame, window: int = 1) -> pd.Series:
    """Per run (index), the mean of its last `window` logged values of ONE tag."""
    if window < 1:
        raise ValueError("window must be >= 1")
    srt = frame.sort_values(["run", "step"], kind="stable")
    tail = srt.groupby("run", observed=True, sort=True).tail(window)
    return tail.groupby("run", observed=True, sort=True)["value"].mean()


def final_summary(
    frame: pd.DataFrame, by: list[str], window: int = 1, level: float = 0.95, n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Final performance per group of `by` columns for ONE tag: n, mean, IQM, CI bounds of the mean.

    Each run contributes one number (mean of its last `window` points); statistics are across runs.
    """
    finals = final_values(frame, window)
    meta = frame.drop_duplicates("run").set_index("run")[by] if by else pd.DataFrame(index=finals.index)
    per_run = meta.loc[finals.index].assign(final=finals.to_numpy())
    return summarize_finals(per_run, by, level, n_boot, seed)


def summarize_finals(per_run: pd.DataFrame, by: list[str], level: float = 0.95, n_boot: int = 2000,
                     seed: int = 0) -> pd.DataFrame:
    """Across-run statistics of a per-run frame with a `final` column, per group of `by` columns."""
    rows = []
    groups = per_run.groupby(by, observed=True, sort=True) if by else [((), per_run)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        vals = g["final"].to_numpy(dtype=np.float64)
        lo, hi = bootstrap_ci(vals, "mean", level, n_boot, seed)
        # n counts the runs the statistics use: a run without a final value (NaN) adds nothing
        rows.append({**dict(zip(by, key)), "n": int(np.isfinite(vals).sum()), "mean": float(nanmean(vals)),
                     "iqm": float(iqm(vals)), "ci_low": float(lo), "ci_high": float(hi),
                     "std": float(np.nanstd(vals))})
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "iqm", "ci_low", "ci_high", "std"])
