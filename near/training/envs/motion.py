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

Interface: :class:`near.training.envs.base.VecEnv`. ``infos['paired_obs']`` holds the last
``numObsSteps`` state feature vectors (oldest first; ``pairedFeatures``: ``all`` 8 features, or
the subset ``root`` (root position, velocity), ``positions`` (root and end positions) or ``end``); :meth:`MotionImitationEnv.demo_transitions`
returns the reference motions in that layout (NEAR's NCSN stage and AMP's discriminator train on
it). ``infos['reference']`` is the reference frame each env aimed at this step (tracking reward).

Metrics: the root path of every episode is recorded; when an episode ends,
``infos['episode_metrics']`` holds, per env (valid where done), the metrics of ``near.metrics``
against the reference root path over the same steps from the episode's initial phase:
``dtw_error``, ``euclidean_error``, ``sparc``, ``root_velocity``, ``root_acceleration``,
``root_jerk`` and ``success_rate`` (the trainers log them as ``<name>/step``; see
``near.metrics.TAGS``). ``episodeMetrics: False`` skips the trajectory metrics (huge GPU runs).
"""

from __future__ import annotations

import math
import dataclasses

import torch

from near import metrics
from near.errors import ConfigError
from near.training.envs.base import VecEnv
from near.training.motions import DT, Motion, load_motions, motion_sources
from near.training.registry import register_env
from near.training.settings import MotionEnvConfig, MotionTask

STATE_DIM = 8
ACTION_DIM = 4


class MotionImitationEnv(VecEnv):
    """Batched planar character imitating a reference motion; all tensors live on `device`."""

    dt = DT
    action_dim = ACTION_DIM
    #: feature groups of the tracking reward (indices into the 8 state features)
    TRACKING_GROUPS = {"pose": [0, 1], "velocity": [2, 3, 6, 7], "end": [4, 5]}
    #: named per-state feature subsets (``pairedFeatures``, NEAR's ``feature_mask``)
    FEATURE_MASKS = {"root": [0, 1, 2, 3], "positions": [0, 1, 4, 5], "end": [4, 5, 6, 7]}

    def __init__(self, cfg: MotionEnvConfig, device: str | torch.device = "cpu", seed: int | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.num_envs = cfg.num_envs
        self.num_obs_steps = cfg.num_obs_steps
        # state features in paired_obs / demo_transitions / infos['reference'] (pairedFeatures)
        self.paired_idx = list(range(STATE_DIM)) if cfg.paired_features == "all" else self.FEATURE_MASKS[cfg.paired_features]
        self.obs_per_step = len(self.paired_idx)
        pos_of = {f: j for j, f in enumerate(self.paired_idx)}
        self.tracking_groups = {g: [pos_of[f] for f in idx if f in pos_of] for g, idx in self.TRACKING_GROUPS.items()}
        self.tracking_groups = {g: idx for g, idx in self.tracking_groups.items() if idx}
        self.max_episode_length = cfg.episode_length
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
        self.obs_dim = STATE_DIM + (2 if cfg.phase_obs else 0) + (4 if cfg.target_obs else 0)
        n, d = self.num_envs, self.device
        self.state = torch.zeros(n, STATE_DIM, device=d)
        self.history = torch.zeros(n, cfg.num_obs_steps, STATE_DIM, device=d)
        self.phase = torch.zeros(n, device=d)
        self.start_phase = torch.zeros(n, device=d)
        self.motion_id = torch.zeros(n, dtype=torch.long, device=d)
        self.progress = torch.zeros(n, dtype=torch.long, device=d)
        self.speed_err = torch.zeros(n, device=d)
        self.path = torch.zeros(n, cfg.episode_length + 1, 2, device=d)
        self.ref_path = torch.zeros(n, cfg.episode_length + 1, 2, device=d)
        # DTW recursion rows of each episode's root path against its reference path (kept online)
        self.dtw_acc, self.dtw_len = metrics.dtw_start(n, cfg.episode_length + 1, torch.float32, d)
        self.reset_idx(torch.arange(n, device=d))

    # ----------------------------------------------------------------- reference
    def phase_step(self, motion_id: torch.Tensor | None = None) -> torch.Tensor:
        """Phase advance per control step of each env's motion (1 / number of frames)."""
        motion_id = self.motion_id if motion_id is None else motion_id
        return 1.0 / self.num_frames[motion_id].float()

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

    def reference_history(self, motion_id: torch.Tensor, phase: torch.Tensor, k: int) -> torch.Tensor:
        """(n, k, 8): the reference at the k consecutive steps ending at `phase` (oldest first)."""
        step = self.phase_step(motion_id)
        return torch.stack([self.reference_state(motion_id, phase - (k - 1 - j) * step) for j in range(k)], 1)

    def motion_sources(self) -> list[dict]:
        """The reference motions this env reads (a run's ``motions.json``)."""
        return motion_sources(self.cfg.motion_file)

    def demo_transitions(self) -> torch.Tensor:
        """All demonstration transitions (M, numObsSteps * 8): every reference frame of every motion
        (and ``demoOversample`` - 1 interpolated phases between frames) with its predecessors,
        flattened oldest first -- the layout of ``infos['paired_obs']``. Motion weights are
        applied by repeating rows (rounded)."""
        out = []
        wmin = float(self.motion_weights.min())
        for k, m in enumerate(self.motions):
            count = m.num_frames * self.cfg.demo_oversample
            phase = torch.arange(count, device=self.device, dtype=torch.float32) / count
            mid = torch.full((count,), k, dtype=torch.long, device=self.device)
            rows = self.reference_history(mid, phase, self.num_obs_steps)[..., self.paired_idx].reshape(count, -1)
            out.append(rows.repeat(max(1, round(m.weight / wmin)), 1))
        return torch.cat(out)

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
        self.history[env_ids] = self.reference_history(mid, phase, self.num_obs_steps)
        self.state[env_ids] = self.history[env_ids, -1]
        self.progress[env_ids] = 0
        self.speed_err[env_ids] = 0.0
        self.path[env_ids] = 0.0
        self.path[env_ids, 0] = self.state[env_ids, :2]
        # the reference root path over the whole episode, from the initial phase on
        t = torch.arange(self.cfg.episode_length + 1, device=self.device)
        phases = phase[:, None] + t[None, :] * self.phase_step(mid)[:, None]
        mids = mid[:, None].expand_as(phases)
        self.ref_path[env_ids] = self.reference_state(mids.reshape(-1), phases.reshape(-1))[:, :2].reshape(n, -1, 2)
        acc, length = metrics.dtw_start(n, self.cfg.episode_length + 1, torch.float32, self.device)
        cost = (self.path[env_ids, :1] - self.ref_path[env_ids]).norm(dim=-1)
        self.dtw_acc[env_ids], self.dtw_len[env_ids] = metrics.dtw_step(acc, length, cost)

    def reset(self) -> torch.Tensor:
        self.reset_idx(torch.arange(self.num_envs, device=self.device))
        return self.observe()

    def observe(self) -> torch.Tensor:
        """Policy observations (N, obs_dim)."""
        parts = [self.state]
        if self.cfg.phase_obs:
            a = 2 * math.pi * self.phase
            parts.append(torch.stack([torch.sin(a), torch.cos(a)], 1))
        if self.cfg.target_obs:
            ref = self.reference_state(phase=self.phase + self.phase_step())  # next step's target
            parts.append(torch.cat([ref[:, :2] - self.state[:, :2], ref[:, 4:6] - self.state[:, 4:6]], 1))
        return torch.cat(parts, 1)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Advance one control step; finished envs are reset (see ``base.VecEnv``).

        Returns obs, task reward (N,), done (N,) and infos with ``paired_obs``, ``time_outs``,
        ``terminate`` (early termination), ``reference`` (the reference frame this step aimed
        at) and, where an episode ended, ``episode_metrics``.
        """
        cfg = self.cfg
        a = torch.clamp(actions.to(self.device, torch.float32), -1.0, 1.0)
        pos, vel = self.state[:, 0:2], self.state[:, 2:4]
        end, evel = self.state[:, 4:6], self.state[:, 6:8]
        h = DT / cfg.substeps
        for _ in range(cfg.substeps):
            acc = cfg.kp_root * (0.5 * a[:, :2]) - cfg.kd_root * vel  # PD towards pos + 0.5 a
            vel = vel + h * acc
            pos = pos + h * vel
            eacc = cfg.kp_end * (0.5 * a[:, 2:] - end) - cfg.kd_end * evel
            evel = evel + h * eacc
            end = end + h * evel
        self.state = torch.cat([pos, vel, end, evel], 1)
        self.history = torch.cat([self.history[:, 1:], self.state[:, None]], 1)
        self.phase = self.phase + self.phase_step()
        self.progress += 1
        ref = self.reference_state()
        speed_gap = vel.norm(dim=1) - ref[:, 2:4].norm(dim=1)
        reward = torch.exp(-4.0 * speed_gap**2)
        self.speed_err += speed_gap.abs()
        rows = torch.arange(self.num_envs, device=self.device)
        col = self.progress.clamp(max=cfg.episode_length)
        self.path[rows, col] = pos
        if cfg.episode_metrics:
            cost = (pos[:, None] - self.ref_path).norm(dim=-1)
            self.dtw_acc, self.dtw_len = metrics.dtw_step(self.dtw_acc, self.dtw_len, cost)

        terminate = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        if cfg.early_termination in ("arena", "reference"):
            terminate |= (pos.abs() > cfg.arena_size).any(dim=1)
        if cfg.early_termination == "reference":
            terminate |= (pos - ref[:, :2]).norm(dim=1) > cfg.termination_distance
        time_out = (self.progress >= cfg.episode_length) & ~terminate
        done = terminate | time_out
        infos = {
            "paired_obs": self.history[..., self.paired_idx].reshape(self.num_envs, -1),
            "time_outs": time_out.float(),
            "terminate": terminate,
            "reference": ref[:, self.paired_idx],
        }
        done_ids = torch.nonzero(done).flatten()
        if done_ids.numel():
            infos["episode_metrics"] = self._episode_metrics(done_ids)
            self.reset_idx(done_ids)
        return self.observe(), reward, done, infos

    # ----------------------------------------------------------------- metrics
    def _episode_metrics(self, ids: torch.Tensor, chunk: int = 256) -> dict[str, torch.Tensor]:
        """Per-env metrics (N,) valid at `ids` (the episodes ending now); zeros elsewhere."""
        n = self.num_envs
        lengths = self.progress[ids]
        mean_err = self.speed_err[ids] / lengths.clamp(min=1)
        out = {"success_rate": torch.zeros(n, device=self.device)}
        out["success_rate"][ids] = (mean_err < 0.2 * self.ref_speed_mean[self.motion_id[ids]]).float()
        if not self.cfg.episode_metrics:
            return out
        # DTW over the episode's frames 0..L, kept up to date step by step
        dtw = self.dtw_acc[ids, lengths + 1] / self.dtw_len[ids, lengths + 1]
        # derivatives need >= 4 frames (jerk); shorter episodes get those of a standing path
        frames = (lengths + 1).clamp(min=4)
        width = self.path.shape[1]
        for start in range(0, ids.numel(), chunk):
            sel = ids[start : start + chunk]
            vals = metrics.episode_metrics(self.path[sel, :width], self.ref_path[sel, :width], self.dt,
                                           frames[start : start + chunk].cpu(), dtw=dtw[start : start + chunk])
            for key, v in vals.items():
                out.setdefault(key, torch.zeros(n, device=self.device))[sel] = v.to(self.device, torch.float32)
        return out

    def feature_mask(self, name: str | None) -> torch.Tensor | None:
        """Masks over ``paired_obs``: ``root`` (root position and velocity), ``positions`` (root and
        end point positions), ``end`` (end point position and velocity), for every state."""
        if name in (None, "", "None"):
            return None
        if name in self.FEATURE_MASKS:
            keep = self.FEATURE_MASKS[name]
            per = [f in keep for f in self.paired_idx]
            return torch.tensor([per[i % self.obs_per_step] for i in range(self.paired_obs_dim)], dtype=torch.bool)
        raise KeyError(f"motion env has no feature mask named {name!r} (known: {', '.join(self.FEATURE_MASKS)})")

    # ----------------------------------------------------------------- checkpoints
    _STATE_KEYS = ("state", "history", "phase", "start_phase", "motion_id", "progress", "speed_err", "path",
                   "ref_path", "dtw_acc", "dtw_len")

    def state_dict(self) -> dict:
        out = {k: getattr(self, k).clone() for k in self._STATE_KEYS}
        out["generator"] = self.generator.get_state()
        return out

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE_KEYS:
            setattr(self, k, state[k].to(self.device))
        self.generator.set_state(state["generator"].cpu())


def make_motion_env(task: MotionTask, num_envs: int, device: str, seed: int) -> MotionImitationEnv:
    """Registry factory: build the env from the motion task's settings."""
    return MotionImitationEnv(dataclasses.replace(task.env, num_envs=num_envs), device=device, seed=seed)


register_env("motion", make_motion_env)
