"""Known-answer tests of near.metrics."""

import math

import numpy as np
import pytest
import torch

from near import metrics

DT = 0.02


def _circle(n: int = 100, shift: int = 0) -> np.ndarray:
    t = (np.arange(n) + shift) * DT
    return np.stack([np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)], axis=1)


def test_dtw_of_a_trajectory_with_itself_is_zero():
    x = _circle()
    assert float(metrics.dtw_error(x, x)) == pytest.approx(0.0, abs=1e-12)


def test_dtw_of_a_constant_offset_is_the_offset():
    # a straight line moved sideways: no warping can bring the frames closer than the offset
    x = np.stack([np.linspace(0, 1, 60), np.zeros(60)], axis=1)
    assert float(metrics.dtw_error(x, x + np.array([0.0, 0.3]))) == pytest.approx(0.3, abs=1e-9)


def test_dtw_of_a_time_shifted_copy_is_below_the_euclidean_error():
    x, y = _circle(shift=0), _circle(shift=10)
    dtw = float(metrics.dtw_error(x, y))
    euc = float(metrics.euclidean_error(x, y))
    assert euc > 0.5  # 10 frames of a 1 Hz circle at 50 Hz is 72 degrees: chord ~1.18
    assert dtw < 0.25 * euc


def test_dtw_handles_different_lengths_and_batches():
    ref = _circle(80)
    slow = _circle(160)[::1]  # the same curve sampled over twice the time range: more than one turn
    x = np.stack([_circle(120), _circle(120) + 1.0])
    out = metrics.dtw_error(x, ref)
    assert out.shape == (2,)
    assert float(out[0]) < float(out[1])
    # a resampled copy (every frame repeated twice) aligns perfectly
    doubled = np.repeat(ref, 2, axis=0)
    assert float(metrics.dtw_error(doubled, ref)) == pytest.approx(0.0, abs=1e-12)
    assert float(metrics.dtw_error(slow, ref)) > 0.0


def test_dtw_matches_a_brute_force_recursion():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    # classic O(nm) recursion with path lengths (ties broken in the same order as near.metrics)
    n, m = len(x), len(y)
    acc = np.full((n + 1, m + 1), np.inf)
    ln = np.zeros((n + 1, m + 1))
    acc[0, 0] = 0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            c = [acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]
            lens = [ln[i - 1, j - 1], ln[i - 1, j], ln[i, j - 1]]
            k = int(np.argmin(c))
            acc[i, j] = c[k] + np.linalg.norm(x[i - 1] - y[j - 1])
            ln[i, j] = lens[k] + 1
    assert float(metrics.dtw_error(x, y)) == pytest.approx(acc[n, m] / ln[n, m], rel=1e-9)


def test_constant_velocity_has_zero_acceleration_and_jerk():
    t = np.arange(50)[:, None] * DT
    pos = np.hstack([2.0 * t, -1.0 * t])
    assert float(metrics.root_velocity(pos, DT)) == pytest.approx(math.sqrt(5.0), rel=1e-9)
    assert float(metrics.root_acceleration(pos, DT)) == pytest.approx(0.0, abs=1e-8)
    assert float(metrics.root_jerk(pos, DT)) == pytest.approx(0.0, abs=1e-6)


def test_constant_acceleration_has_zero_jerk_and_known_acceleration():
    t = np.arange(50)[:, None] * DT
    pos = np.hstack([0.5 * 3.0 * t**2, np.zeros_like(t)])
    assert float(metrics.root_acceleration(pos, DT)) == pytest.approx(3.0, rel=1e-6)
    assert float(metrics.root_jerk(pos, DT)) == pytest.approx(0.0, abs=1e-4)
    # a cubic has a constant jerk of 6 * c
    cubic = np.hstack([2.0 * t**3, np.zeros_like(t)])
    assert float(metrics.root_jerk(cubic, DT)) == pytest.approx(12.0, rel=1e-5)


def test_sparc_of_a_smooth_bell_is_higher_than_a_noisy_one():
    t = np.arange(0, 2.0, 0.01)
    bell = np.exp(-((t - 1.0) ** 2) / (2 * 0.15**2))
    noisy = np.abs(bell + np.random.default_rng(1).normal(0, 0.2, size=t.shape))
    two_peaks = np.exp(-((t - 0.6) ** 2) / (2 * 0.1**2)) + np.exp(-((t - 1.4) ** 2) / (2 * 0.1**2))
    s_bell = float(metrics.sparc(bell, 0.01))
    assert -1.7 < s_bell < -1.3  # a single Gaussian bell is close to the theoretical optimum
    assert float(metrics.sparc(noisy, 0.01)) < s_bell - 0.5
    assert float(metrics.sparc(two_peaks, 0.01)) < s_bell
    batch = metrics.sparc(np.stack([bell, noisy]), 0.01)
    assert batch.shape == (2,) and float(batch[0]) == pytest.approx(s_bell)


def test_sparc_batches_reach_the_fft_in_few_shapes_and_padding_changes_nothing(monkeypatch):
    # a GPU env's batch of ended episodes changes size every step; cuFFT builds a plan per shape
    rng = np.random.default_rng(3)
    speeds = np.abs(rng.normal(1.0, 0.3, size=(9, 60)))
    lengths = rng.integers(10, 61, size=9)
    alone = [float(metrics.sparc(speeds[i:i + 1], 0.02, lengths=lengths[i:i + 1])) for i in range(9)]
    seen = []
    rfft = torch.fft.rfft

    def spy(x, *args, **kwargs):
        seen.append(x.shape[0])
        return rfft(x, *args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft", spy)
    for b in range(1, 10):
        out = metrics.sparc(speeds[:b], 0.02, lengths=lengths[:b])
        assert out.shape == (b,)
        np.testing.assert_allclose(out.numpy(), alone[:b], rtol=1e-9)
    assert set(seen) == {1, 2, 4, 8, 16}


def test_episode_length_and_success_rate():
    assert metrics.mean_episode_length([10, 20, 30]) == pytest.approx(20.0)
    assert metrics.success_rate(torch.tensor([True, False, True, True])) == pytest.approx(0.75)
    assert math.isnan(metrics.mean_episode_length([]))


def test_trajectory_metrics_keys_match_tags_and_bad_shapes_are_rejected():
    x = _circle()
    vals = metrics.trajectory_metrics(x, x, DT)
    assert set(vals) <= set(metrics.TAGS)
    assert vals["dtw_error"] == pytest.approx(0.0, abs=1e-12)
    assert vals["root_velocity"] == pytest.approx(2 * np.pi, rel=1e-2)
    with pytest.raises(ValueError, match="feature dims"):
        metrics.dtw_error(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="frames"):
        metrics.root_jerk(np.zeros((3, 2)), DT)


def test_padded_batches_give_the_same_answers_as_single_episodes():
    rng = np.random.default_rng(3)
    a = np.cumsum(rng.normal(size=(30, 2)), axis=0) * 0.1
    b = np.cumsum(rng.normal(size=(30, 2)), axis=0) * 0.1
    ref = _circle(30)
    paths = np.stack([a, b])
    refs = np.stack([ref, ref])
    lens = torch.tensor([30, 17])
    batch = metrics.episode_metrics(paths, refs, DT, lens)
    single_b = metrics.trajectory_metrics(b[:17], ref[:17], DT)
    single_a = metrics.trajectory_metrics(a, ref, DT)
    # SPARC zero-pads to the batch's width: compare with the short episode padded the same way
    speed_b = metrics.speed_profile(b[:17], DT)
    single_b["sparc"] = float(metrics.sparc(torch.cat([speed_b, torch.zeros(12, dtype=speed_b.dtype)]), DT))
    for key, val in batch.items():
        assert float(val[1]) == pytest.approx(single_b[key], rel=1e-9), key
        assert float(val[0]) == pytest.approx(single_a[key], rel=1e-9), key


def test_dtw_step_by_step_equals_the_whole_recursion():
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(size=(3, 12, 2)))
    ref = torch.tensor(rng.normal(size=(3, 15, 2)))
    acc, length = metrics.dtw_start(3, 15)
    for t in range(12):
        acc, length = metrics.dtw_step(acc, length, torch.linalg.vector_norm(x[:, t, None] - ref, dim=-1))
    online = acc[:, 15] / length[:, 15]
    assert torch.allclose(online, metrics.dtw_error(x, ref), rtol=1e-12)


def test_dtw_cost_step_matches_the_textbook_recursion():
    rng = np.random.default_rng(6)
    x, ref = rng.normal(size=(2, 9, 3)), rng.normal(size=(2, 11, 3))
    acc = metrics.dtw_start(2, 11)[0]
    for t in range(9):
        acc = metrics.dtw_cost_step(acc, torch.tensor(((x[:, t, None] - ref) ** 2).sum(-1)))
    for b in range(2):  # D[i, j] = c[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])
        c = ((x[b, :, None] - ref[b, None]) ** 2).sum(-1)
        d = np.full((10, 12), np.inf)
        d[0, 0] = 0.0
        for i in range(1, 10):
            for j in range(1, 12):
                d[i, j] = c[i - 1, j - 1] + min(d[i - 1, j - 1], d[i - 1, j], d[i, j - 1])
        assert acc[b, 11].item() == pytest.approx(d[9, 11], rel=1e-12)


def test_travel_speed_is_net_displacement_over_time():
    dt = 1 / 30
    forward = np.tile([0.04, 0.0], (30, 1))  # 0.04 m per frame for a second: 1.2 m/s
    assert metrics.travel_speed(forward, dt) == pytest.approx(1.2)
    diagonal = np.tile([0.03, 0.04], (10, 1))
    assert metrics.travel_speed(diagonal, dt) == pytest.approx(1.5)
    pacing = np.concatenate([forward, -forward])  # there and back: no travel
    assert metrics.travel_speed(pacing, dt) == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        metrics.travel_speed(np.zeros((0, 2)), dt)


def test_foot_alternations_count_side_changes_beyond_the_margin():
    t = np.linspace(0, 2, 121)  # two seconds of a 1 Hz gait: four half-cycles, so 3 changes of side
    left = 0.05 + 0.05 * np.sin(2 * np.pi * t)
    right = 0.05 - 0.05 * np.sin(2 * np.pi * t)
    assert metrics.foot_alternations(left, right) == 3
    # jitter below the margin is no step; standing still is none either
    jitter = 0.01 * np.sin(40 * np.pi * t)
    assert metrics.foot_alternations(0.05 + jitter, 0.05 - jitter) == 0
    # a foot that stays lower never alternates, however it moves
    assert metrics.foot_alternations(left - 0.2, right) == 0
