"""Known-answer tests of near.report.stats (pure functions)."""

import numpy as np
import pandas as pd
import pytest

from near.report import stats


def test_iqm_known_answers():
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # trims 1,2 and 7,8
    assert stats.iqm(np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)  # n//4 == 0: plain mean
    x = np.array([[1.0, np.nan], [2.0, 5.0], [3.0, np.nan], [100.0, np.nan]])
    np.testing.assert_allclose(stats.iqm(x, axis=0), [2.5, 5.0])  # NaNs ignored per column


def test_nanmean_all_missing_is_nan_without_error():
    out = stats.nanmean(np.array([[np.nan, 1.0], [np.nan, 3.0]]), axis=0)
    assert np.isnan(out[0]) and out[1] == 2.0


def test_bootstrap_ci_known_cases():
    lo, hi = stats.bootstrap_ci(np.full(5, 3.0))
    assert lo == hi == 3.0
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    a = stats.bootstrap_ci(x, n_boot=500, seed=7)
    b = stats.bootstrap_ci(x, n_boot=500, seed=7)
    assert a == b  # seeded
    assert a[0] < 3.0 < a[1]
    # same resamples, computed by hand with the same generator
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 5, size=(500, 5))
    means = x[idx].mean(axis=1)
    assert a[0] == pytest.approx(np.quantile(means, 0.025))
    assert a[1] == pytest.approx(np.quantile(means, 0.975))
    wide = stats.bootstrap_ci(x, level=0.99, n_boot=500, seed=7)
    assert wide[0] <= a[0] and wide[1] >= a[1]


def test_bootstrap_ci_per_column_with_missing_runs():
    mat = np.array([[1.0, 2.0, np.nan], [1.0, 4.0, np.nan]])
    lo, hi = stats.bootstrap_ci(mat, n_boot=200)
    assert lo[0] == hi[0] == 1.0
    assert 2.0 <= lo[1] <= hi[1] <= 4.0
    assert np.isnan(lo[2]) and np.isnan(hi[2])


def test_ema_matches_tensorboard_debiased_formula():
    np.testing.assert_allclose(stats.ema(np.array([0.0, 1.0]), 0.5), [0.0, 2.0 / 3.0])
    np.testing.assert_allclose(stats.ema(np.ones(4), 0.9), np.ones(4))
    np.testing.assert_allclose(stats.ema(np.array([1.0, 2.0]), 0.0), [1.0, 2.0])
    with pytest.raises(ValueError):
        stats.ema(np.ones(2), 1.0)


def test_align_interpolates_and_never_extrapolates():
    grid = np.array([0.0, 5.0, 10.0, 15.0, 20.0])
    np.testing.assert_allclose(stats.align([0, 10, 20], [0.0, 1.0, 2.0], grid), [0, 0.5, 1, 1.5, 2])
    out = stats.align([0, 5, 10], [1.0, 2.0, 3.0], grid)
    np.testing.assert_allclose(out[:3], [1, 2, 3])
    assert np.isnan(out[3:]).all()
    # duplicate steps (a resumed run) keep the last value
    np.testing.assert_allclose(stats.align([0, 10, 10, 20], [0, 5, 1, 2], grid)[2], 1.0)


def test_step_grid_union_by_default_truncate_only_when_asked():
    short, long = np.array([0, 10, 20]), np.array([0, 15, 30, 45])
    g = stats.step_grid([short, long], points=4)
    assert g[0] == 0 and g[-1] == 45
    g = stats.step_grid([short, long], points=4, truncate=True)
    assert g[-1] == 20
    same = np.array([0, 100, 200])
    np.testing.assert_array_equal(stats.step_grid([same, same], points=10), same)


def test_run_matrix_and_curve_keep_runs_that_stopped_early():
    frame = pd.DataFrame({
        "run": ["a"] * 3 + ["b"] * 5,
        "step": [0, 10, 20, 0, 10, 20, 30, 40],
        "value": [0.0, 1, 2, 0, 2, 4, 6, 8],
    })
    grid, mat, runs = stats.run_matrix(frame, points=5)
    np.testing.assert_allclose(grid, [0, 10, 20, 30, 40])
    assert runs == ["a", "b"]
    curve = stats.aggregate_curve(grid, mat, runs, n_boot=100)
    np.testing.assert_allclose(curve.center, [0, 1.5, 3, 6, 8])
    np.testing.assert_array_equal(curve.n, [2, 2, 2, 1, 1])


def test_final_summary_per_group():
    frame = pd.DataFrame({
        "run": ["r1", "r1", "r2", "r2", "r3", "r3"],
        "algorithm": ["A", "A", "A", "A", "B", "B"],
        "step": [0, 1, 0, 1, 0, 1],
        "value": [0.0, 2.0, 0.0, 4.0, 1.0, 5.0],
    })
    s = stats.final_summary(frame, ["algorithm"], window=1, n_boot=200)
    a = s.set_index("algorithm").loc["A"]
    assert a["n"] == 2 and a["mean"] == 3.0 and 2.0 <= a["ci_low"] <= a["ci_high"] <= 4.0
    s2 = stats.final_summary(frame, ["algorithm"], window=2)
    assert s2.set_index("algorithm").loc["B", "mean"] == 3.0


def test_final_summary_counts_only_runs_with_a_final_value():
    """A run whose final window is all NaN adds nothing to its group's mean, so it is not counted in n."""
    frame = pd.DataFrame({"run": ["r1", "r2", "r3"], "algorithm": ["A", "A", "A"], "step": [0, 0, 0],
                          "value": [2.0, 4.0, np.nan]})
    a = stats.final_summary(frame, ["algorithm"], window=1, n_boot=200).iloc[0]
    assert a["n"] == 2 and a["mean"] == 3.0
