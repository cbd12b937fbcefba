"""A vectorized planar motion-imitation environment (batched torch, CPU or GPU).

The character: a point-mass *root* in the plane and one *end point* on a short limb attached to
it. Actions (4, in [-1, 1]) are PD targets: the root's position target is its position plus
``0.5 m * a[:2]``, the end point's target (relative to the root) is ``0.5 m * a[2:]``. The
simulation integrates the PD forces with semi-implicit Euler (``substeps`` per 0.05 s control
step), so speed, acceleration and jerk are continuous and bounded.

State features (the demonstration features, 8): root x, y, vx, vy, end x, y, vx, vy (end point
relative to the root), see ``near.training.motions.FEATURES``. The policy observation is the state,
plus (``phaseObs``) sin/cos of the phase and (``targetObs``) the offsets of the reference root and
end point from the character's -- the latter two for the tracking baseline.

Reference motions (``motion_file``) come from :mod:`near.training.motions`. Each episode picks a
motion (by weight) and, with ``stateInit: Random``, a random phase whose reference frame becomes
the initial state (reference state initialisation); the phase then advances with time.

Task reward (what plain PPO optimises): match the reference's current speed,
``exp(-4 (|v| - |v_ref|)^2)``; an episode *succeeds* when its mean absolute speed error is below
20 % of the reference's mean speed. Imitation rewards come from the algorithms (NEAR, AMP,
tracking), not from here.

Early termination (``earlyTermination``): ``arena`` ends an episode when the root leaves a
3 m box; ``reference`` also ends it when the root is more than ``terminationDistance`` from the
reference (DeepMimic-style, used by tracking); ``none`` never terminates early.

Metrics: the root path of every episode is recorded; :meth:`MotionImitationEnv.pop_metrics`
returns the metrics of ``near.metrics`` (DTW error against the reference path starting at the
episode's initial phase, SPARC, velocity, acceleration, jerk, episode length, success) over the
episodes finished since the last call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from near import metrics
from near.errors import ConfigError
from near.training.motions import DT, Motion, load_motions

STATE_DIM = 8
ACTION_DIM = 4


@dataclass
class MotionEnvConfig:
    """Settings of :class:`MotionImitationEnv` (the ``task.env`` block of cfg/task/motion*.yaml)."""

    num_envs: int = 256
    motion_file: str = "circle"
    episode_length: int = 100
    state_init: str = "Random"  # Random (RSI) | Default (phase 0)
    early_termination: str = "arena"  # arena | reference | none
    termination_distance: float = 0.5
    arena_size: float = 3.0
    phase_obs: bool = False
    target_obs: bool = False
    num_obs_steps: int = 2
    substeps: int = 4
    kp_root: float = 100.0
    kd_root: float = 20.0
    kp_end: float = 200.0
    kd_end: float = 28.0
    max_metric_episodes: int = 32

    @classmethod
    def from_dict(cls, d: dict) -> "MotionEnvConfig":
        """Build from NEAR-style camelCase keys (numEnvs, motion_file, episodeLength, ...)."""
        names = {
            "numEnvs": "num_envs",
            "episodeLength": "episode_length",
            "stateInit": "state_init",
            "earlyTermination": "early_termination",
            "terminationDistance": "termination_distance",
            "arenaSize": "arena_size",
            "phaseObs": "phase_obs",
            "targetObs": "target_obs",
            "numObsSteps": "num_obs_steps",
            "numAMPObsSteps": "num_obs_steps",
            "maxMetricEpisodes": "max_metric_episodes",
        }
        fields = set(cls.__dataclass_fields__)
        kw = {}
        for key, val in d.items():
            name = names.get(key, key)
            if name in fields:
                kw[name] = val
        cfg = cls(**kw)
        if cfg.state_init not in ("Random", "Default"):
            raise ConfigError(f"task.env.stateInit must be Random or Default, got {cfg.state_init!r}")
        if cfg.early_termination not in ("arena", "reference", "none"):
            raise ConfigError(f"task.env.earlyTermination must be arena, reference or none, got {cfg.early_termination!r}")
        if cfg.num_envs < 1 or cfg.episode_length < 5 or cfg.num_obs_steps < 1:
            raise ConfigError("task.env: numEnvs >= 1, episodeLength >= 5 and numObsSteps >= 1 are required")
        return cfg


class MotionImitationEnv:
    """Batched planar character imitating a reference motion; all tensors live on `device`."""

    dt = DT

    def __init__(self, cfg: MotionEnvConfig, device: str | torch.device = "cpu", seed: int | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.num_envs = cfg.num_envs
        self.motions: list[Motion] = load_motions(cfg.motion_file)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0 if seed is None else int(seed))
        self.motion_weights = torch.tensor([m.weight for m in self.motions], device=self.device)
        # one table of frames per motion, padded to the longest, for batched lookup
        t_max = max(m.num_frames for m in self.motions)
        self.frames = torch.zeros(len(self.motions), t_max, STATE_DIM, device=self.device)
        for k, m in enumerate(self.motions):
            self.frames[k, : m.num_frames] = m.frames.to(self.device)
        self.num_frames = torch.tensor([m.num_frames for m in self.motions], device=self.device)
        self.ref_speed_mean = torch.tensor(
            [float(m.frames[:, 2:4].norm(dim=1).mean()) for m in self.motions], device=self.device
        )
        self.num_obs = STATE_DIM + (2 if cfg.phase_obs else 0) + (4 if cfg.target_obs else 0)
        self.num_actions = ACTION_DIM
        n, d = self.num_envs, self.device
        self.state = torch.zeros(n, STATE_DIM, device=d)
        self.phase = torch.zeros(n, device=d)
        self.start_phase = torch.zeros(n, device=d)
        self.motion_id = torch.zeros(n, dtype=torch.long, device=d)
        self.progress = torch.zeros(n, dtype=torch.long, device=d)
        self.speed_err = torch.zeros(n, device=d)
        self.path = torch.zeros(n, cfg.episode_length + 1, 2, device=d)
        self._finished: list[dict] = []
        self._finished_lengths: list[float] = []
        self._finished_success: list[float] = []
        self.reset_idx(torch.arange(n, device=d))

    # ----------------------------------------------------------------- reference
    def reference_state(self, motion_id: torch.Tensor | None = None, phase: torch.Tensor | None = None) -> torch.Tensor:
        """Reference features (N, 8) of each env's motion at its current phase (or the given ones)."""
        motion_id = self.motion_id if motion_id is None else motion_id
        phase = self.phase if phase is None else phase
        nf = self.num_frames[motion_id]
        f = torch.remainder(phase, 1.0) * nf
        i0 = torch.floor(f).long() % nf
        i1 = (i0 + 1) % nf
        w = (f - torch.floor(f)).unsqueeze(-1)
        return self.frames[motion_id, i0] * (1 - w) + self.frames[motion_id, i1] * w

    def demo_transitions(self, num_obs_steps: int | None = None) -> torch.Tensor:
        """All demonstration transitions: (M, num_obs_steps * 8), consecutive frames of each motion
        flattened oldest first (the layout of :meth:`transition_obs`)."""
        k = num_obs_steps or self.cfg.num_obs_steps
        out = []
        for m in self.motions:
            idx = (torch.arange(m.num_frames)[:, None] + torch.arange(k)[None, :]) % m.num_frames
            out.append(m.frames[idx].reshape(m.num_frames, k * STATE_DIM))
        return torch.cat(out).to(self.device)

    def sample_demo_transitions(self, n: int, num_obs_steps: int | None = None) -> torch.Tensor:
        """`n` demonstration transitions at random (continuous) phases, motions drawn by weight."""
        k = num_obs_steps or self.cfg.num_obs_steps
        mid = torch.multinomial(self.motion_weights, n, replacement=True, generator=self.generator)
        phase = torch.rand(n, device=self.device, generator=self.generator)
        step = DT / (self.num_frames[mid] * DT)
        frames = [self.reference_state(mid, phase + j * step) for j in range(k)]
        return torch.cat(frames, dim=1)

    # ----------------------------------------------------------------- dynamics
    def reset_idx(self, env_ids: torch.Tensor) -> None:
        """Reset the given envs: pick a motion and a phase, start at that reference frame (RSI)."""
        if env_ids.numel() == 0:
            return
        n = env_ids.numel()
        mid = torch.multinomial(self.motion_weights, n, replacement=True, generator=self.generator)
        if self.cfg.state_init == "Random":
            phase = torch.rand(n, device=self.device, generator=self.generator)
        else:
            phase = torch.zeros(n, device=self.device)
        self.motion_id[env_ids] = mid
        self.phase[env_ids] = phase
        self.start_phase[env_ids] = phase
        self.state[env_ids] = self.reference_state(mid, phase)
        self.progress[env_ids] = 0
        self.speed_err[env_ids] = 0.0
        self.path[env_ids] = 0.0
        self.path[env_ids, 0] = self.state[env_ids, :2]

    def observe(self) -> torch.Tensor:
        """Policy observations (N, num_obs)."""
        parts = [self.state]
        if self.cfg.phase_obs:
            a = 2 * math.pi * self.phase
            parts.append(torch.stack([torch.sin(a), torch.cos(a)], 1))
        if self.cfg.target_obs:
            ref = self.reference_state()
            parts.append(torch.cat([ref[:, :2] - self.state[:, :2], ref[:, 4:6] - self.state[:, 4:6]], 1))
        return torch.cat(parts, 1)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Advance one control step; finished envs are reset. Returns obs, task reward, done, extras.

        extras: ``terminate`` (early termination, not time-out), ``time_outs``, ``state`` and
        ``prev_state`` (the features before reset, for imitation rewards), ``reference`` (the
        reference frame the step was aiming at, before reset).
        """
        cfg = self.cfg
        a = torch.clamp(actions.to(self.device, torch.float32), -1.0, 1.0)
        prev = self.state.clone()
        pos, vel, end, evel = self.state[:, 0:2], self.state[:, 2:4], self.state[:, 4:6], self.state[:, 6:8]
        pos, vel, end, evel = pos.clone(), vel.clone(), end.clone(), evel.clone()
        h = DT / cfg.substeps
        for _ in range(cfg.substeps):
            acc = cfg.kp_root * (0.5 * a[:, :2]) - cfg.kd_root * vel  # target = pos + 0.5 a
            vel = vel + h * acc
            pos = pos + h * vel
            eacc = cfg.kp_end * (0.5 * a[:, 2:] - end) - cfg.kd_end * evel
            evel = evel + h * eacc
            end = end + h * evel
        self.state = torch.cat([pos, vel, end, evel], 1)
        self.phase = self.phase + DT / (self.num_frames[self.motion_id] * DT)
        self.progress += 1
        ref = self.reference_state()
        speed_gap = vel.norm(dim=1) - ref[:, 2:4].norm(dim=1)
        reward = torch.exp(-4.0 * speed_gap**2)
        self.speed_err += speed_gap.abs()
        self.path[torch.arange(self.num_envs, device=self.device), self.progress.clamp(max=cfg.episode_length)] = pos

        terminate = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        if cfg.early_termination in ("arena", "reference"):
            terminate |= (pos.abs() > cfg.arena_size).any(dim=1)
        if cfg.early_termination == "reference":
            terminate |= (pos - ref[:, :2]).norm(dim=1) > cfg.termination_distance
        time_out = self.progress >= cfg.episode_length
        done = terminate | time_out
        extras = {"terminate": terminate, "time_outs": time_out & ~terminate, "state": self.state.clone(),
                  "prev_state": prev, "reference": ref}
        done_ids = torch.nonzero(done).flatten()
        if done_ids.numel():
            self._record(done_ids)
            self.reset_idx(done_ids)
        return self.observe(), reward, done, extras

    # ----------------------------------------------------------------- metrics
    def _record(self, ids: torch.Tensor) -> None:
        lengths = self.progress[ids]
        mean_err = self.speed_err[ids] / lengths.clamp(min=1)
        success = mean_err < 0.2 * self.ref_speed_mean[self.motion_id[ids]]
        self._finished_lengths += lengths.float().tolist()
        self._finished_success += success.float().tolist()
        room = self.cfg.max_metric_episodes - len(self._finished)
        for i in ids[: max(room, 0)].tolist():
            steps = int(self.progress[i]) + 1
            self._finished.append({
                "path": self.path[i, :steps].cpu().clone(),
                "motion": int(self.motion_id[i]),
                "start_phase": float(self.start_phase[i]),
            })

    def pop_metrics(self) -> dict[str, float]:
        """Metrics (keys of ``near.metrics.TAGS``) over episodes finished since the last call; {} if none."""
        out: dict[str, float] = {}
        if self._finished_lengths:
            out["episode_length"] = metrics.mean_episode_length(self._finished_lengths)
            out["success_rate"] = metrics.success_rate(self._finished_success)
        eps = [e for e in self._finished if e["path"].shape[0] >= 5]
        if eps:
            out.update(episode_trajectory_metrics(self.motions, eps, self.dt))
        self._finished, self._finished_lengths, self._finished_success = [], [], []
        return out


def episode_trajectory_metrics(motions: list[Motion], episodes: list[dict], dt: float) -> dict[str, float]:
    """Trajectory metrics averaged over recorded episodes ({path (T, 2), motion, start_phase}).

    Episodes of equal length are evaluated as one batch (one DTW recursion for all of them).
    """
    groups: dict[int, list[dict]] = {}
    for e in episodes:
        groups.setdefault(int(e["path"].shape[0]), []).append(e)
    sums: dict[str, float] = {}
    for steps, group in groups.items():
        paths = torch.stack([e["path"].double() for e in group])
        refs = torch.stack([motions[e["motion"]].root_path(e["start_phase"], steps).double() for e in group])
        vals = {
            "dtw_error": metrics.dtw_error(paths, refs),
            "euclidean_error": metrics.euclidean_error(paths, refs),
            "sparc": metrics.sparc(metrics.speed_profile(paths, dt), dt),
            "root_velocity": metrics.root_velocity(paths, dt),
            "root_acceleration": metrics.root_acceleration(paths, dt),
            "root_jerk": metrics.root_jerk(paths, dt),
        }
        for k, v in vals.items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
    return {k: v / len(episodes) for k, v in sums.items()}
