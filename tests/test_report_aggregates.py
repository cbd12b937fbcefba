"""near.report.aggregates against rliable itself, on the same score matrices and seeds (to 1e-9).

rliable 1.2 cannot run unmodified here: it pins arch<8 (which does not import next to pandas 3),
and with arch 8 its bootstrap passes ``random_state=None``, which arch 8 takes for data. The
fixture drops that one argument; everything else -- resampling, statistics, intervals -- is rliable's.
"""

import numpy as np
import pandas as pd
import pytest

from near.report import aggregates


@pytest.fixture(scope="module")
def rliable(request):
    import arch.bootstrap as arch_bs

    patched = []
    for cls in (arch_bs.IIDBootstrap, arch_bs.IndependentSamplesBootstrap):
        orig = cls.__init__

        def init(self, *args, _orig=orig, **kwargs):
            if kwargs.get("random_state", 0) is None:
                kwargs.pop("random_state")
            _orig(self, *args, **kwargs)

        cls.__init__ = init
        patched.append((cls, orig))
    from rliable import library, metrics

    yield library, metrics
    for cls, orig in patched:
        cls.__init__ = orig


def _scores():
    rng = np.random.default_rng(11)
    near = rng.normal(0.9, 0.2, (5, 3))
    amp = rng.normal(0.7, 0.3, (4, 3))
    amp[0, 1] = near[2, 1]  # a tie across algorithms
    return {"NEAR": near, "AMP": amp, "flat": np.full((3, 3), 0.5)}


def test_interval_estimates_equal_rliable(rliable):
    library, metrics = rliable
    scores = _scores()
    funcs = [metrics.aggregate_iqm, metrics.aggregate_mean, metrics.aggregate_median, metrics.aggregate_optimality_gap]
    mine = aggregates.interval_estimates(scores, aggregates.METRICS, level=0.9, reps=700, seed=5)
    for g, mat in scores.items():
        np.random.seed(5)  # rliable resamples from numpy's global generator
        point, ci = library.get_interval_estimates({g: mat}, lambda x: np.array([f(x) for f in funcs]), reps=700,
                                                   confidence_interval_size=0.9)
        for k, m in enumerate(aggregates.METRICS):
            np.testing.assert_allclose(mine[g][m], [point[g][k], ci[g][0, k], ci[g][1, k]], rtol=0, atol=1e-9)


def test_performance_profiles_equal_rliable(rliable):
    library, _ = rliable
    scores = _scores()
    taus = np.linspace(0.0, 1.5, 31)
    mine = aggregates.performance_profiles(scores, taus, reps=400, seed=2)
    for g, mat in scores.items():
        np.random.seed(2)
        prof, cis = library.create_performance_profile({g: mat}, taus, reps=400)
        np.testing.assert_allclose(mine[g][0], prof[g], atol=1e-9)
        np.testing.assert_allclose(mine[g][1], cis[g][0], atol=1e-9)
        np.testing.assert_allclose(mine[g][2], cis[g][1], atol=1e-9)


def test_probability_of_improvement_equals_rliable(rliable):
    library, metrics = rliable
    scores = _scores()
    pairs = [("NEAR", "AMP"), ("AMP", "NEAR"), ("flat", "flat")]
    mine = aggregates.probability_of_improvement(scores, pairs, reps=300, seed=9)
    for x, y in pairs:
        assert mine[(x, y)][0] == pytest.approx(metrics.probability_of_improvement(scores[x], scores[y]), abs=1e-12)
        np.random.seed(9)
        point, ci = library.get_interval_estimates({"p": [scores[x], scores[y]]}, metrics.probability_of_improvement,
                                                   reps=300)
        expected = [float(point["p"]), *np.ravel(ci["p"]).astype(float)]
        np.testing.assert_allclose(mine[(x, y)], expected, atol=1e-9)
    assert mine[("flat", "flat")][0] == 0.5
    assert mine[("NEAR", "AMP")][0] + mine[("AMP", "NEAR")][0] == pytest.approx(1.0)


def test_score_matrices_normalise_orient_and_cut():
    per_run = pd.DataFrame({
        "algorithm": ["A"] * 5 + ["B"] * 2,
        "motion": ["walk", "walk", "walk", "run", "run", "walk", "run"],
        "final": [10.0, 20.0, 30.0, 5.0, np.nan, 0.0, 1.0],
    })
    sm = aggregates.score_matrices(per_run, "algorithm", "motion", {"walk": (40.0, 0.0), "run": (10.0, 0.0)})
    assert sm.normalized and not sm.oriented and sm.tasks == ["run", "walk"]
    # A: run has one finite final (the NaN run is left out), walk three -> cut to 1 each, with a warning
    np.testing.assert_allclose(sm.scores["A"], [[0.5, 0.25]])
    assert any("unequal runs per motion" in w for w in sm.warnings)
    raw = aggregates.score_matrices(per_run, "algorithm", "motion", {"walk": (40.0, 0.0)}, higher_is_better=False)
    assert not raw.normalized and raw.oriented  # a reference missing for one task: raw scores, negated
    np.testing.assert_allclose(raw.scores["B"], [[-1.0, -0.0]])
