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
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.detach().to("cpu", torch.float64)


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


def dtw_error(
    x: ArrayLike, y: ArrayLike, x_len: ArrayLike | None = None, y_len: ArrayLike | None = None
) -> torch.Tensor:
    """Mean per-frame Euclidean distance between `x` and `y` along their optimal DTW path.

    x: (T1, D) or (B, T1, D); y: (T2, D) or (B, T2, D) (a single y is broadcast over the batch).
    x_len / y_len (B,): valid frames of each padded batch row (default: all). Returns a scalar
    tensor (unbatched input) or shape (B,). The recursion runs over anti-diagonals so the cost
    is O(T1 + T2) vectorised steps, batched over B.
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
    # exact differences (cdist's matrix-product shortcut loses ~1e-9 for identical frames)
    cost = torch.cdist(xb, yb, compute_mode="donot_use_mm_for_euclid_dist").cpu()  # (B, n, m)
    inf = torch.tensor(math.inf, dtype=cost.dtype)
    acc = torch.full((batch, n + 1, m + 1), math.inf, dtype=cost.dtype)
    length = torch.zeros((batch, n + 1, m + 1), dtype=cost.dtype)
    acc[:, 0, 0] = 0.0
    for diag in range(2, n + m + 1):  # i + j == diag, 1-based cell indices
        i = torch.arange(max(1, diag - m), min(n, diag - 1) + 1)
        j = diag - i
        cands = torch.stack([acc[:, i - 1, j - 1], acc[:, i - 1, j], acc[:, i, j - 1]], dim=-1)
        lens = torch.stack([length[:, i - 1, j - 1], length[:, i - 1, j], length[:, i, j - 1]], dim=-1)
        best, arg = cands.min(dim=-1)
        best = torch.where(torch.isfinite(best), best, inf)
        acc[:, i, j] = best + cost[:, i - 1, j - 1]
        length[:, i, j] = lens.gather(-1, arg[..., None])[..., 0] + 1.0
    # cell (a, b) depends only on cells <= (a, b): padding beyond a row's own lengths is harmless
    rows = torch.arange(batch)
    xl = torch.full((batch,), n, dtype=torch.long) if x_len is None else torch.as_tensor(x_len).long().cpu().expand(batch)
    yl = torch.full((batch,), m, dtype=torch.long) if y_len is None else torch.as_tensor(y_len).long().cpu().expand(batch)
    if bool(((xl < 1) | (xl > n) | (yl < 1) | (yl > m)).any()):
        raise ValueError("dtw_error: lengths must lie in [1, padded length]")
    out = acc[rows, xl, yl] / length[rows, xl, yl]
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
    lens = torch.full((p.shape[0],), p.shape[1]) if lengths is None else torch.as_tensor(lengths).long().cpu()
    if p.shape[1] <= order or bool((lens <= order).any()):
        raise ValueError(f"need more than {order} frames for derivative order {order}, got {int(lens.min())}")
    d = p
    for _ in range(order):
        d = torch.diff(d, dim=1) / dt
    norms = torch.linalg.vector_norm(d, dim=-1)
    valid = torch.arange(norms.shape[1])[None, :] < (lens - order)[:, None]
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
    (zero padded to 2**(ceil(log2 T) + pad_level) points) is normalised by its DC value and cut
    at the last frequency below `fc` Hz whose magnitude is at least `amp_th`; the result is minus
    the arc length of that curve with the frequency axis normalised to [0, 1]. Higher = smoother;
    a single smooth bell scores about -1.4, noise and extra peaks push it lower.
    lengths (B,): valid samples of each padded row (default: all).
    """
    s = _as_tensor(speed)
    single = s.ndim == 1
    if single:
        s = s[None]
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"sparc expects a speed profile of shape (T,) or (B, T) with T >= 2, got {tuple(s.shape)}")
    lens = [s.shape[1]] * s.shape[0] if lengths is None else [int(v) for v in torch.as_tensor(lengths).tolist()]
    out = torch.empty(s.shape[0], dtype=torch.float64)
    for b in range(s.shape[0]):
        nfft = int(2 ** (math.ceil(math.log2(max(lens[b], 2))) + pad_level))
        freq = torch.arange(nfft // 2 + 1, dtype=torch.float64) / (nfft * dt)
        mag = torch.fft.rfft(s[b, : lens[b]], n=nfft).abs()
        mag = mag / mag[:1].clamp_min(1e-12)
        in_band = freq <= fc
        m = mag[in_band]
        f = freq[in_band]
        above = torch.nonzero(m >= amp_th).flatten()
        last = int(above[-1]) if above.numel() else 0
        m, f = m[: last + 1], f[: last + 1]
        if m.numel() < 2:
            out[b] = 0.0
            continue
        f = f / f[-1]
        out[b] = -torch.sqrt(torch.diff(f) ** 2 + torch.diff(m) ** 2).sum()
    return out[0] if single else out


def mean_episode_length(lengths: ArrayLike) -> float:
    """Mean length (in steps) of finished episodes; NaN when none finished."""
    t = _as_tensor(lengths).flatten()
    return float(t.mean()) if t.numel() else float("nan")


def success_rate(successes: ArrayLike) -> float:
    """Fraction of finished episodes that solved the task (booleans or 0/1); NaN when none."""
    t = _as_tensor(successes).flatten()
    return float(t.mean()) if t.numel() else float("nan")


def episode_metrics(
    root_pos: ArrayLike, reference: ArrayLike, dt: float, lengths: ArrayLike | None = None
) -> dict[str, torch.Tensor]:
    """Per-episode trajectory metrics, keyed like TAGS, each of shape (B,).

    root_pos, reference: (B, T, D) padded root paths of the rollouts and of the reference over the
    same steps; lengths (B,): valid frames of each row (>= 4, default T).
    """
    p, _ = _batched(root_pos)
    r, _ = _batched(reference)
    lens = torch.full((p.shape[0],), p.shape[1]) if lengths is None else torch.as_tensor(lengths).long().cpu()
    return {
        "dtw_error": dtw_error(p, r, lens, lens),
        "euclidean_error": _masked_mean(torch.linalg.vector_norm(p - r[:, : p.shape[1]], dim=-1), lens),
        "sparc": sparc(speed_profile(p, dt), dt, lengths=lens - 1),
        "root_velocity": root_velocity(p, dt, lens),
        "root_acceleration": root_acceleration(p, dt, lens),
        "root_jerk": root_jerk(p, dt, lens),
    }


def _masked_mean(v: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    valid = torch.arange(v.shape[1])[None, :] < lens[:, None]
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
