"""Evaluation metrics of the NEAR paper, each defined once (pure torch, no I/O).

All functions accept torch tensors or numpy arrays. A *trajectory* is an array of shape
``(T, D)`` (T frames of a D-dimensional feature, e.g. root position or full pose) or a batch
``(B, T, D)``. ``dt`` is the time between two frames in seconds.

Metrics and their conventions (lower is better unless said otherwise):

- :func:`dtw_error` -- imitation error. Dynamic time warping between a rollout and a
  demonstration with a Euclidean frame cost; the accumulated cost along the optimal warping
  path divided by that path's length, i.e. the *mean* per-frame distance after the best
  monotone time alignment. A trajectory against itself scores 0; a constant offset ``d``
  scores ``d``; a time-shifted copy scores (much) less than the frame-by-frame error.
- :func:`euclidean_error` -- mean frame-by-frame distance without alignment (the reference
  DTW improves on).
- :func:`sparc` -- spectral arc length of a speed profile (Balasubramanian et al., 2015).
  Always negative; **higher (closer to 0) is smoother**.
- :func:`root_velocity`, :func:`root_acceleration`, :func:`root_jerk` -- mean norm of the first,
  second and third finite-difference derivative of the root position. A constant velocity
  has zero acceleration and zero jerk.
- :func:`mean_episode_length` and :func:`success_rate` -- averages over finished episodes.
- :func:`travel_speed` and :func:`foot_alternations` -- whether a rendered walk walks: the root's
  mean horizontal speed and how often the lower foot changes sides.

Tensorboard tag names for these metrics are in :data:`TAGS` (written by the trainers, read by
the report stage).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]

#: Tensorboard tags under which the trainers log each metric (mean over the episodes that
#: finished recently; x axis = environment frames). Environments report per-episode values in
#: ``infos['episode_metrics'][name]`` and the PPO base logs them as ``<name>/step``; the episode
#: length is rl-games' own ``episode_lengths/step``.
TAGS: dict[str, str] = {
    "dtw_error": "dtw_error/step",
    "euclidean_error": "euclidean_error/step",
    "sparc": "sparc/step",
    "root_velocity": "root_velocity/step",
    "root_acceleration": "root_acceleration/step",
    "root_jerk": "root_jerk/step",
    "episode_length": "episode_lengths/step",
    "success_rate": "success_rate/step",
}


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    """x as a float64 tensor; a tensor keeps its device (a GPU env's metrics stay on the GPU)."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.detach().to(torch.float64)


def _lengths(lengths: ArrayLike | None, batch: int, full: int, device: torch.device) -> torch.Tensor:
    """Valid frames per batch row as a long tensor on `device` (default: all `full` frames)."""
    if lengths is None:
        return torch.full((batch,), full, dtype=torch.long, device=device)
    return torch.as_tensor(lengths).long().to(device)


def _batched(x: ArrayLike) -> tuple[torch.Tensor, bool]:
    """Return x as (B, T, D) float64 and whether the input was unbatched."""
    t = _as_tensor(x)
    if t.ndim == 1:  # a scalar signal over time
        return t[None, :, None], True
    if t.ndim == 2:
        return t[None], True
    if t.ndim == 3:
        return t, False
    raise ValueError(f"expected a trajectory of shape (T, D) or (B, T, D), got {tuple(t.shape)}")


def dtw_start(batch: int, m: int, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
    """The DTW recursion's row 0 against a reference of `m` frames: (acc, length), each (batch, m + 1).

    acc[:, j] is the accumulated cost of the best warping path ending at reference frame j
    (1-based; column 0 is the boundary), length[:, j] that path's number of cells.
    """
    acc = torch.full((batch, m + 1), math.inf, dtype=dtype, device=device)
    acc[:, 0] = 0.0
    return acc, torch.zeros((batch, m + 1), dtype=dtype, device=device)


def dtw_step(acc: torch.Tensor, length: torch.Tensor, cost_row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance the DTW recursion by one frame of x: `cost_row` (B, m) = distances of that frame to
    every reference frame. Returns the new (acc, length) rows; column 0 stays the boundary (inf).

    D[i, j] = c[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1]). Unrolling the in-row term gives
    D[i, j] = S[j] + cummin_{k<=j}(M[k] - S[k]) with S the row's cumulative cost and
    M[k] = c[i, k] + min(D[i-1, k-1], D[i-1, k]): one vectorised scan per frame. This is also
    how environments keep an episode's DTW error up to date step by step.
    """
    diag, up = acc[:, :-1], acc[:, 1:]
    use_up = up < diag  # ties go to the diagonal
    prev_best = torch.where(use_up, up, diag)
    prev_len = torch.where(use_up, length[:, 1:], length[:, :-1])
    csum = torch.cumsum(cost_row, dim=-1)
    run_min, start = torch.cummin(prev_best + cost_row - csum, dim=-1)
    cols = torch.arange(cost_row.shape[-1], device=cost_row.device, dtype=cost_row.dtype)
    new_len = prev_len.gather(-1, start) + 1.0 + (cols - start.to(cost_row.dtype))
    boundary = torch.full_like(acc[:, :1], math.inf)
    return torch.cat([boundary, csum + run_min], -1), torch.cat([torch.zeros_like(boundary), new_len], -1)


def dtw_cost_step(acc: torch.Tensor, cost_row: torch.Tensor) -> torch.Tensor:
    """:func:`dtw_step` for the accumulated cost alone (no path lengths): half the work, for a
    recursion whose only output is the final cost (NEAR's DTW pose error)."""
    prev_best = torch.minimum(acc[:, :-1], acc[:, 1:])
    csum = torch.cumsum(cost_row, dim=-1)
    run_min = torch.cummin(prev_best + cost_row - csum, dim=-1).values
    return torch.cat([torch.full_like(acc[:, :1], math.inf), csum + run_min], -1)


def dtw_error(
    x: ArrayLike, y: ArrayLike, x_len: ArrayLike | None = None, y_len: ArrayLike | None = None
) -> torch.Tensor:
    """Mean per-frame Euclidean distance between `x` and `y` along their optimal DTW path.

    x: (T1, D) or (B, T1, D); y: (T2, D) or (B, T2, D) (a single y is broadcast over the batch).
    x_len / y_len (B,): valid frames of each padded batch row (default: all). Returns a scalar
    tensor (unbatched input) or shape (B,). One vectorised :func:`dtw_step` per frame of x,
    batched over B.
    """
    xb, x_single = _batched(x)
    yb, y_single = _batched(y)
    if xb.shape[-1] != yb.shape[-1]:
        raise ValueError(f"feature dims differ: {xb.shape[-1]} vs {yb.shape[-1]}")
    if xb.shape[1] == 0 or yb.shape[1] == 0:
        raise ValueError("dtw_error needs non-empty trajectories")
    batch = max(xb.shape[0], yb.shape[0])
    xb = xb.expand(batch, -1, -1)
    yb = yb.expand(batch, -1, -1)
    n, m = xb.shape[1], yb.shape[1]
    dev = xb.device
    xl = _lengths(x_len, batch, n, dev).expand(batch)
    yl = _lengths(y_len, batch, m, dev).expand(batch)
    if bool(((xl < 1) | (xl > n) | (yl < 1) | (yl > m)).any()):
        raise ValueError("dtw_error: lengths must lie in [1, padded length]")
    # exact differences (cdist's matrix-product shortcut loses ~1e-9 for identical frames)
    cost = torch.cdist(xb, yb, compute_mode="donot_use_mm_for_euclid_dist")  # (B, n, m)
    acc, length = dtw_start(batch, m, device=dev)
    out = torch.zeros(batch, dtype=torch.float64, device=dev)
    rows = torch.arange(batch, device=dev)
    # cell (a, b) depends only on cells <= (a, b): padding beyond a row's own lengths is harmless
    for i in range(n):
        acc, length = dtw_step(acc, length, cost[:, i])
        done = xl == i + 1
        if bool(done.any()):
            out[done] = acc[rows[done], yl[done]] / length[rows[done], yl[done]]
    return out[0] if (x_single and y_single) else out


def euclidean_error(x: ArrayLike, y: ArrayLike) -> torch.Tensor:
    """Mean frame-by-frame Euclidean distance over the first min(T1, T2) frames (no alignment)."""
    xb, x_single = _batched(x)
    yb, y_single = _batched(y)
    t = min(xb.shape[1], yb.shape[1])
    out = torch.linalg.vector_norm(xb[:, :t] - yb[:, :t], dim=-1).mean(dim=-1)
    return out[0] if (x_single and y_single) else out


def _derivative_norm(pos: ArrayLike, dt: float, order: int, lengths: ArrayLike | None = None) -> torch.Tensor:
    if dt <= 0:
        raise ValueError(f"dt must be positive, got {dt}")
    p, single = _batched(pos)
    lens = _lengths(lengths, p.shape[0], p.shape[1], p.device)
    # lengths already on a GPU are the caller's to keep valid: checking them would wait for the device
    if p.shape[1] <= order or (lens.device.type == "cpu" and bool((lens <= order).any())):
        raise ValueError(f"need more than {order} frames for derivative order {order}, "
                         f"got {min(p.shape[1], int(lens.min()))}")
    d = p
    for _ in range(order):
        d = torch.diff(d, dim=1) / dt
    norms = torch.linalg.vector_norm(d, dim=-1)
    valid = torch.arange(norms.shape[1], device=p.device)[None, :] < (lens - order)[:, None]
    out = (norms * valid).sum(dim=-1) / valid.sum(dim=-1)
    return out[0] if single else out


def root_velocity(pos: ArrayLike, dt: float, lengths: ArrayLike | None = None) -> torch.Tensor:
    """Mean speed of the root: mean over frames of |d pos / dt| (finite differences)."""
    return _derivative_norm(pos, dt, 1, lengths)


def root_acceleration(pos: ArrayLike, dt: float, lengths: ArrayLike | None = None) -> torch.Tensor:
    """Mean norm of the root's second finite-difference derivative."""
    return _derivative_norm(pos, dt, 2, lengths)


def root_jerk(pos: ArrayLike, dt: float, lengths: ArrayLike | None = None) -> torch.Tensor:
    """Mean norm of the root's third finite-difference derivative (zero for constant acceleration)."""
    return _derivative_norm(pos, dt, 3, lengths)


def speed_profile(pos: ArrayLike, dt: float) -> torch.Tensor:
    """Speed |d pos / dt| per frame, shape (T-1,) or (B, T-1)."""
    p, single = _batched(pos)
    s = torch.linalg.vector_norm(torch.diff(p, dim=1) / dt, dim=-1)
    return s[0] if single else s


def _pad_batch(s: torch.Tensor) -> torch.Tensor:
    """s (B, T) with zero rows appended up to the next power of two of B.

    cuFFT plans are cached per input shape, batch included, and building one costs tens of
    milliseconds of host time: a GPU env whose number of ended episodes changes every step would
    build a new plan each step, so batches are rounded to a few sizes whose plans stay cached."""
    bucket = 1 << max(s.shape[0] - 1, 0).bit_length()
    return torch.cat([s, s.new_zeros(bucket - s.shape[0], s.shape[1])]) if bucket > s.shape[0] else s


def sparc(
    speed: ArrayLike,
    dt: float,
    pad_level: int = 4,
    fc: float = 10.0,
    amp_th: float = 0.05,
    lengths: ArrayLike | None = None,
) -> torch.Tensor:
    """Spectral arc length of a speed profile (Balasubramanian, Melendez-Calderon, Burdet 2015).

    speed: (T,) or (B, T) non-negative speeds sampled every `dt` seconds. The magnitude spectrum
    (zero padded to 2**(ceil(log2 T) + pad_level) points, T the array's width) is normalised by
    its DC value and cut at the last frequency below `fc` Hz whose magnitude is at least
    `amp_th`; the result is minus the arc length of that curve with the frequency axis
    normalised to [0, 1]. Higher = smoother; a single smooth bell scores about -1.4, noise and
    extra peaks push it lower. lengths (B,): valid samples of each padded row (the rest is
    treated as zero padding; default: all). Fully vectorised over B.
    """
    s = _as_tensor(speed)
    single = s.ndim == 1
    if single:
        s = s[None]
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"sparc expects a speed profile of shape (T,) or (B, T) with T >= 2, got {tuple(s.shape)}")
    if lengths is not None:
        lens = _lengths(lengths, s.shape[0], s.shape[1], s.device)
        s = s * (torch.arange(s.shape[1], device=s.device)[None, :] < lens[:, None])
    nfft = int(2 ** (math.ceil(math.log2(s.shape[1])) + pad_level))
    # the band is a prefix (bins k / (nfft dt) <= fc), counted on the host: slice before the costly
    # complex abs, without reading anything back from the device
    nband = min(nfft // 2, math.floor(fc * nfft * dt * (1 + 1e-12))) + 1
    freq = torch.arange(nband, dtype=torch.float64, device=s.device) / (nfft * dt)
    mag = torch.fft.rfft(_pad_batch(s), n=nfft)[: s.shape[0], :nband].abs()
    mag = mag / mag[:, :1].clamp_min(1e-12)
    idx = torch.arange(freq.numel(), device=s.device)
    last = torch.where(mag >= amp_th, idx, torch.zeros_like(idx)).max(dim=1).values  # (B,)
    f_last = freq[last].clamp_min(1e-12)
    df = torch.diff(freq)[None, :] / f_last[:, None]
    dm = torch.diff(mag, dim=1)
    seg = torch.sqrt(df**2 + dm**2) * (idx[None, 1:] <= last[:, None])
    out = -seg.sum(dim=1)
    return out[0] if single else out


def travel_speed(steps: ArrayLike, dt: float) -> float:
    """Mean horizontal speed (m/s) of a root that moved by ``steps`` (T, 2) in T frames of ``dt`` s:
    the length of the summed displacement over the time, so pacing back and forth scores ~0."""
    d = _as_tensor(steps).double()
    if d.ndim != 2 or d.shape[0] == 0:
        raise ValueError(f"travel_speed needs (T, 2) displacements, got shape {tuple(d.shape)}")
    return float(d.sum(0).norm() / (d.shape[0] * dt))


def foot_alternations(left_z: ArrayLike, right_z: ArrayLike, margin: float = 0.02) -> int:
    """How many times the lower of two feet changes from one foot to the other over a rollout
    (heights in m per frame). A foot counts as lower only when it is ``margin`` below the other,
    so two feet side by side do not flicker; a walk alternates about twice per gait cycle."""
    gap = (_as_tensor(left_z).double() - _as_tensor(right_z).double()).tolist()
    lower, changes = None, 0
    for g in gap:
        now = "left" if g < -margin else "right" if g > margin else None
        if now is not None and lower is not None and now != lower:
            changes += 1
        lower = now or lower
    return changes


def mean_episode_length(lengths: ArrayLike) -> float:
    """Mean length (in steps) of finished episodes; NaN when none finished."""
    t = _as_tensor(lengths).flatten()
    return float(t.mean()) if t.numel() else float("nan")


def success_rate(successes: ArrayLike) -> float:
    """Fraction of finished episodes that solved the task (booleans or 0/1); NaN when none."""
    t = _as_tensor(successes).flatten()
    return float(t.mean()) if t.numel() else float("nan")


def episode_metrics(
    root_pos: ArrayLike,
    reference: ArrayLike,
    dt: float,
    lengths: ArrayLike | None = None,
    dtw: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-episode trajectory metrics, keyed like TAGS, each of shape (B,).

    root_pos, reference: (B, T, D) padded root paths of the rollouts and of the reference over the
    same steps; lengths (B,): valid frames of each row (>= 4, default T). `dtw`: the DTW errors
    if already known (an environment that ran :func:`dtw_step` along the episode).
    """
    p, _ = _batched(root_pos)
    r, _ = _batched(reference)
    lens = _lengths(lengths, p.shape[0], p.shape[1], p.device)
    return {
        "dtw_error": dtw_error(p, r, lens, lens) if dtw is None else _as_tensor(dtw),
        "euclidean_error": _masked_mean(torch.linalg.vector_norm(p - r[:, : p.shape[1]], dim=-1), lens),
        "sparc": sparc(speed_profile(p, dt), dt, lengths=lens - 1),
        "root_velocity": root_velocity(p, dt, lens),
        "root_acceleration": root_acceleration(p, dt, lens),
        "root_jerk": root_jerk(p, dt, lens),
    }


def _masked_mean(v: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    valid = torch.arange(v.shape[1], device=v.device)[None, :] < lens[:, None]
    return (v * valid).sum(dim=-1) / valid.sum(dim=-1)


def trajectory_metrics(root_pos: ArrayLike, reference: ArrayLike, dt: float) -> dict[str, float]:
    """All trajectory metrics of one rollout (T, D) against a reference (T_ref, D), keyed like TAGS.

    Batched rollouts (B, T, D) are averaged over B.
    """
    vals = {
        "dtw_error": dtw_error(root_pos, reference),
        "euclidean_error": euclidean_error(root_pos, reference),
        "sparc": sparc(speed_profile(root_pos, dt), dt),
        "root_velocity": root_velocity(root_pos, dt),
        "root_acceleration": root_acceleration(root_pos, dt),
        "root_jerk": root_jerk(root_pos, dt),
    }
    return {k: float(torch.as_tensor(v).mean()) for k, v in vals.items()}
