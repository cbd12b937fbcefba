"""NEAR's HumanoidAMP task on MuJoCo (CPU) or MuJoCo Warp (GPU), batched as torch tensors.

The character is ``amp_humanoid.xml`` (NEAR's, in MuJoCo's terms: 15 bodies, 28 hinges, 28 PD
servos with NEAR's gains and torque limits). Control runs at NEAR's rate: every action sets the
PD targets ``offset + scale * a`` in NEAR's coordinates (a 3-DoF joint's target is an exp map
spanning +-pi per component, a hinge's 0.7 x its range around its middle), converted to the
hinges (:mod:`.skeleton`), and the simulator takes 4 physics steps of 0.0083 s (NEAR: sim dt
0.0166 s with 2 substeps, 2 sim steps per action: 0.0332 s). Episodes last ``episodeLength``
(300) control steps.

Observation: NEAR's 105-dim AMP observation of the current state (:func:`skeleton.humanoid_obs`;
``localRootObs`` makes the root rotation heading-relative); ``targetObs`` appends the next
reference frame's observation (tracking). ``infos['paired_obs']`` holds ``numObsSteps``
consecutive observations (210 for 2), and :meth:`HumanoidEnv.demo_transitions` the reference
motions in that layout (NEAR's energy model and AMP's discriminator train on it).

Reset (``stateInit``): ``Random`` reference state initialisation (motion by weight, time
uniform), ``Start`` (time 0), ``Default`` (standing pose), ``Hybrid`` (Random with probability
``hybridInitProb``, else Default). NEAR's ``WeightedRandom`` is refused (not implemented here).
Early termination (``enableEarlyTermination``): a body other than ``contactBodies`` (the feet) touches the floor
below ``terminationHeight`` (0.3 m), after the first two steps (NEAR's rule).

Task reward (``rewardTypes``, default inferred from the motion's name as NEAR does: walk and run
``[time, dist]``, others ``[time]``): ``time`` 1 per step; ``dist`` the forward (x) displacement
of the pelvis per step clipped to [0, 0.5 m] and scaled to [0, 1]; several are averaged.

Episode metrics (``infos['episode_metrics']`` at the step after an episode ends, valid where
``infos['episode_ended']``; :meth:`HumanoidEnv.flush_episode_metrics` gives the last step's; logged as
``<name>/step``):
the pose is the 15 body positions relative to the pelvis (45 numbers), compared with the
reference motion over the same steps from the episode's start time.
``mean_dtw_pose_error`` is NEAR's: tslearn's DTW (square root of the least summed squared frame
distance) divided by 15; ``dtw_error`` is near's (mean frame distance along the best path) / 15.
``spectral_arc_length`` is NEAR's SPARC of each root velocity axis, averaged; ``sparc``,
``root_velocity`` / ``root_acceleration`` / ``root_jerk`` and NEAR's ``root_body_velocity`` /
``root_body_acceleration`` / ``root_body_jerk`` come from the root path (``near.metrics``).
"""

from __future__ import annotations

import math
import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from near import metrics
from near.errors import ConfigError
from near.training.envs.base import VecEnv
from near.training.envs.humanoid import skeleton as sk
from near.training.envs.humanoid.backends import BACKENDS
from near.training.envs.humanoid.motion_lib import MotionTable, load_motions
from near.training.settings import HumanoidEnvConfig, HumanoidTask

#: NEAR's control step: sim dt 0.0166 s x controlFrequencyInv 2 (the model's timestep is half NEAR's dt)
CONTROL_DT = 2 * 0.0166
PHYSICS_STEPS = 4
NEAR_REWARD_TYPES = {"walk": ["time", "dist"], "run": ["time", "dist"], "cartwheel": ["time", "dist"]}
DEFAULT_HEIGHT = 0.89


def check_env_config(cfg: HumanoidEnvConfig) -> None:
    """What the settings' types cannot say: known backend and contact bodies."""
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"task.sim.backend must be one of {', '.join(BACKENDS)} or isaacgym, got {cfg.backend!r}")
    unknown = set(cfg.contact_bodies) - set(sk.BODY_NAMES)
    if unknown:
        raise ConfigError(f"task.env.contactBodies: unknown bodies {sorted(unknown)} (bodies: {', '.join(sk.BODY_NAMES)})")


def _feature_groups() -> dict[str, list[int]]:
    """Indices of the 105 observation features by meaning (tracking groups and feature masks)."""
    dof_obs, dof_vel, key = [], [], []
    o = 13
    body_of_dof = []
    for j in range(len(sk.DOF_OFFSETS) - 1):
        size = sk.DOF_OFFSETS[j + 1] - sk.DOF_OFFSETS[j]
        width = 6 if size == 3 else 1
        dof_obs.append(list(range(o, o + width)))
        o += width
        body_of_dof += [sk.DOF_BODY_IDS[j]] * size
    vel = list(range(65, 93))
    key = [list(range(93 + 3 * i, 96 + 3 * i)) for i in range(4)]
    upper = {sk.BODY_NAMES.index(b) for b in sk.UPPER_BODY}
    up = [i for j, b in enumerate(sk.DOF_BODY_IDS) if b in upper for i in dof_obs[j]]
    up += [vel[i] for i, b in enumerate(body_of_dof) if b in upper]
    up += [i for k, b in enumerate(sk.KEY_BODY_IDS) if b in upper for i in key[k]]
    lower = [i for i in range(sk.OBS_DIM) if i not in set(up)]
    return {"root": list(range(0, 7)), "pose": [i for g in dof_obs for i in g], "velocity": list(range(7, 13)) + vel,
            "end": [i for g in key for i in g], "upper_body": sorted(up), "lower_body": lower}


class HumanoidEnv(VecEnv):
    """``num_envs`` humanoids imitating reference motions; all tensors on `device`."""

    dt = CONTROL_DT
    action_dim = sk.NUM_DOF
    obs_per_step = sk.OBS_DIM

    def __init__(self, cfg: HumanoidEnvConfig, device: str | torch.device = "cpu", seed: int | None = None):
        check_env_config(cfg)
        self.cfg = cfg
        self.device = torch.device(device)
        self.num_envs = n = cfg.num_envs
        self.num_obs_steps = cfg.num_obs_steps
        self.max_episode_length = cfg.episode_length
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0 if seed is None else int(seed))
        self.motions = load_motions(cfg.motion_file)
        self.table = MotionTable(self.motions, self.device)
        stem = Path(str(cfg.motion_file)).stem.removeprefix("amp_humanoid_")
        self.reward_types = list(cfg.reward_types or NEAR_REWARD_TYPES.get(stem, ["time"]))
        groups = _feature_groups()
        self.tracking_groups = {k: groups[k] for k in ("root", "pose", "velocity", "end")}
        self.masks = {k: groups[k] for k in ("upper_body", "lower_body")}
        self.may_touch = torch.tensor([b in cfg.contact_bodies for b in sk.BODY_NAMES], device=self.device)
        self.sim = BACKENDS[cfg.backend](n, self.device)
        model = self.sim.model if hasattr(self.sim, "model") else None
        if model is None:
            from near.training.envs.humanoid.backends import load_model
            model = load_model()
        lim = torch.as_tensor(model.jnt_range[1:], dtype=torch.float32)
        self.pd_offset, self.pd_scale = (t.to(self.device) for t in sk.pd_offset_scale(lim[:, 0], lim[:, 1]))
        self.lower, self.upper = lim[:, 0].to(self.device), lim[:, 1].to(self.device)
        self.obs_dim = sk.OBS_DIM * (2 if cfg.target_obs else 1)
        d = self.device
        self.obs = torch.zeros(n, sk.OBS_DIM, device=d)
        self.history = torch.zeros(n, cfg.num_obs_steps, sk.OBS_DIM, device=d)
        self.motion_id = torch.zeros(n, dtype=torch.long, device=d)
        self.start_time = torch.zeros(n, device=d)
        self.progress = torch.zeros(n, dtype=torch.long, device=d)
        self.prev_root_x = torch.zeros(n, device=d)
        steps = cfg.episode_length + 1
        self.root_path = torch.zeros(n, steps, 3, device=d)
        self.ref_pose = torch.zeros(n, steps, 45, device=d) if cfg.episode_metrics else None
        self.dtw_acc, self.dtw_len = metrics.dtw_start(n, steps, torch.float32, d)
        self.dtw_sq = self.dtw_acc.clone()  # the squared-cost recursion starts from the same row
        self.diverged = torch.zeros(n, dtype=torch.bool, device=d)
        # motion ids are drawn by inverse CDF: one uniform number per env, no host round trip
        self.motion_cdf = self.table.weights.cumsum(0) / self.table.weights.sum()
        self._done_ids = HostIndices(n, self.device)
        self._ended: _Ended | None = None            # the last step's finished episodes, not yet settled
        self._report: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None  # settled, not yet in infos
        self.stand_qpos, self.stand_obs, self.stand_body_pos = self._standing(model)
        self.reset()

    def _standing(self, model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """qpos, observation and body positions of the ``Default`` standing pose (forward
        kinematics once, on the CPU, whatever the backend)."""
        import mujoco

        data = mujoco.MjData(model)
        data.qpos[:] = 0.0
        data.qpos[2], data.qpos[3] = DEFAULT_HEIGHT, 1.0
        mujoco.mj_forward(model, data)
        f = lambda a: torch.as_tensor(a, dtype=torch.float32, device=self.device)[None]  # noqa: E731
        qpos, body = f(data.qpos), f(data.xpos[1:])
        zero3, zero_dof = torch.zeros(1, 3, device=self.device), torch.zeros(1, sk.NUM_DOF, device=self.device)
        rot = torch.cat([qpos[:, 4:7], qpos[:, 3:4]], 1)
        obs = sk.humanoid_obs(qpos[:, :3], rot, zero3, zero3, qpos[:, 7:], zero_dof,
                              body[:, sk.ix(sk.KEY_BODY_IDS, body)], self.cfg.local_root_obs)
        return qpos[0], obs[0], body[0]

    # ------------------------------------------------------------------ reference
    def reference_obs(self, motion_id: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """The 105-dim observation of the reference motions at `time` (same formula as the agent's)."""
        return self._state_obs(self.table.state(motion_id, time))

    def _state_obs(self, s: dict[str, torch.Tensor]) -> torch.Tensor:
        key = s["body_pos"][..., sk.ix(sk.KEY_BODY_IDS, s["body_pos"]), :]
        return sk.humanoid_obs(s["root_pos"], s["root_rot"], s["root_vel"], s["root_ang_vel"], s["dof_pos"],
                               s["dof_vel"], key, self.cfg.local_root_obs)

    def reference_history(self, motion_id: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """(N, numObsSteps, 105): the reference observations up to `time`, oldest first."""
        return self._reference_frames(motion_id, time)[0]

    def _reference_frames(self, motion_id: torch.Tensor, time: torch.Tensor):
        """:meth:`reference_history` and the reference state at `time`, from one table lookup (fewer
        kernels: resets run on most steps, after the step's one wait for the GPU)."""
        k, n = self.num_obs_steps, motion_id.shape[0]
        frames = self.table.state(motion_id.repeat(k), torch.cat([time - (k - 1 - j) * self.dt for j in range(k)]))
        history = self._state_obs(frames).view(k, n, -1).transpose(0, 1)
        return history, {key: v[(k - 1) * n:] for key, v in frames.items()}

    def demo_transitions(self) -> torch.Tensor:
        """Every control step of every motion (``demoOversample`` phases per step) with its
        ``numObsSteps - 1`` predecessors, oldest first; weights applied by repeating rows."""
        out = []
        wmin = float(self.table.weights.min())
        for k, m in enumerate(self.motions):
            count = max(1, int(m.duration / self.dt * self.cfg.demo_oversample))
            time = (self.num_obs_steps - 1) * self.dt + torch.arange(count, device=self.device) * (
                m.duration - (self.num_obs_steps - 1) * self.dt) / count
            mid = torch.full((count,), k, dtype=torch.long, device=self.device)
            rows = self.reference_history(mid, time).reshape(count, -1)
            out.append(rows.repeat(max(1, round(m.weight / wmin)), 1))
        return torch.cat(out)

    def _pose(self, body_pos: torch.Tensor) -> torch.Tensor:
        """(..., 15, 3) -> (..., 45): body positions relative to the pelvis."""
        return (body_pos - body_pos[..., :1, :]).flatten(-2)

    # ------------------------------------------------------------------ state
    def _sim_state(self):
        qpos, qvel, xpos, touch = self.sim.read()
        root_rot = torch.cat([qpos[:, 4:7], qpos[:, 3:4]], 1)  # MuJoCo wxyz -> xyzw
        ang_world = sk.quat_rotate(root_rot, qvel[:, 3:6])    # free-joint angular velocity is body-local
        hinges = qpos[:, 7:]
        dof = sk.dof_from_quats(sk.quats_from_hinges(hinges))
        obs = sk.humanoid_obs(qpos[:, :3], root_rot, qvel[:, :3], ang_world, dof, sk.dof_velocity(hinges, qvel[:, 6:]),
                              xpos[:, sk.ix(sk.KEY_BODY_IDS, xpos)], self.cfg.local_root_obs)
        return obs, xpos, touch

    def _start_episodes(self, mask: torch.Tensor, report: bool) -> None:
        """Reset the envs where `mask` (N,) is True by ``stateInit`` (see the module docstring).

        Every env draws a start (motion, time, standing or not) at every call, so the random stream
        does not depend on which envs are reset. On a simulator that takes masked writes (MuJoCo
        Warp) every env's start is looked up and `mask` selects which envs take it: nothing is read
        back, so on the GPU the host never waits here. On the CPU simulator, which writes env by env
        anyway, only the reset envs' starts are looked up (the same values). A reset env's
        observation and body positions are those of the reference state it starts in (or of the
        standing pose). What needs the reset envs' indices on the GPU (their episode metrics, the
        new episodes' reference poses and DTW rows) is left for :meth:`_settle`; `report`: whether
        the ending episodes' metrics are reported."""
        n, d, cfg = self.num_envs, self.device, self.cfg
        u = torch.rand(3, n, device=d, generator=self.generator)
        ids = None if self.sim.masked_writes else self._done_ids.fetch(mask)()
        if ids is not None:
            if ids.numel() == 0:
                return
            u = u[:, ids]

        def put(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            """A copy of `old` with the reset envs' rows from `new` (all N rows, or theirs alone)."""
            if ids is None:
                return torch.where(mask.view((-1,) + (1,) * (new.dim() - 1)), new, old)
            return old.index_copy(0, ids, new)

        def rows(new: torch.Tensor) -> torch.Tensor:
            """`new` as N rows, of which only the reset envs' are read (where only theirs were looked up)."""
            return new if ids is None else new.new_zeros((n, *new.shape[1:])).index_copy(0, ids, new)

        mid = torch.searchsorted(self.motion_cdf, u[0], right=True).clamp_(max=len(self.motions) - 1)
        time = u[1] * self.table.duration[mid]
        if cfg.state_init == "Start":
            time.zero_()
        if cfg.state_init == "Default":
            default = torch.ones_like(u[2], dtype=torch.bool)
        elif cfg.state_init == "Hybrid":
            default = u[2] >= cfg.hybrid_init_prob
        else:
            default = torch.zeros_like(u[2], dtype=torch.bool)
        time = torch.where(default, 0.0, time)
        history, s = self._reference_frames(mid, time)
        rot = s["root_rot"]
        hinges = sk.hinges_from_quats(s["joint_rot"], self.lower, self.upper, s["dof_pos"])
        qpos = torch.cat([s["root_pos"], rot[:, 3:], rot[:, :3], hinges], 1)
        qvel = torch.cat([s["root_vel"], sk.quat_rotate(sk.quat_conj(rot), s["root_ang_vel"]),
                          sk.hinge_rates(hinges, s["dof_vel"])], 1)
        col = default[:, None]
        qpos = torch.where(col, self.stand_qpos, qpos)
        qvel = torch.where(col, 0.0, qvel)
        self.sim.set_state(mask, rows(qpos), rows(qvel))
        self.motion_id = put(self.motion_id, mid)
        self.start_time = put(self.start_time, time)
        # new tensors, not writes into the old ones: the ended episodes' lengths and divergence stay
        # for _settle, and this step's paired_obs keeps the state the step reached
        length, diverged = self.progress, self.diverged
        self.progress = torch.where(mask, 0, self.progress)
        self.diverged = diverged & ~mask
        hist = torch.where(default[:, None, None], self.stand_obs, history)
        self.history = put(self.history, hist)
        self.obs = put(self.obs, hist[:, -1])
        body = torch.where(default[:, None, None], self.stand_body_pos, s["body_pos"])
        self.prev_root_x = put(self.prev_root_x, body[:, 0, 0])
        if cfg.episode_metrics:
            fetch = self._done_ids.fetch(mask) if ids is None else (lambda: ids)
            self._ended = _Ended(mask, fetch, length, diverged, rows(body), report)

    def _settle(self) -> None:
        """The work of the last reset that needs the reset envs' indices, read from the copy of its
        mask started then (done by now: the GPU has run that step): the ended episodes' metrics (kept
        for the next ``infos``), then the new episodes' root path, reference poses and DTW rows."""
        ended, self._ended = self._ended, None
        if ended is None:
            return
        ids = ended.ids()
        if ids.numel() == 0:
            return
        if ended.report:
            self._report = (self._episode_metrics(ids, ended.length[ids], ended.diverged[ids]), ended.mask)
        n, d, steps = ids.numel(), self.device, self.cfg.episode_length + 1
        body = ended.start_body[ids]
        self.root_path.index_fill_(0, ids, 0.0)
        self.root_path[ids, 0] = body[:, 0]
        t = self.start_time[ids, None] + torch.arange(steps, device=d)[None, :] * self.dt
        ref = self.table.body_positions(self.motion_id[ids, None].expand(-1, steps), t)
        self.ref_pose[ids] = ref = self._pose(ref)
        acc, length = metrics.dtw_start(n, steps, torch.float32, d)
        sq = acc.clone()
        dist = (self._pose(body)[:, None] - ref).norm(dim=-1)
        self.dtw_acc[ids], self.dtw_len[ids] = metrics.dtw_step(acc, length, dist)
        self.dtw_sq[ids] = metrics.dtw_cost_step(sq, dist.square())

    def flush_episode_metrics(self) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
        """The metrics of the episodes that ended at the last step, which the next step's ``infos``
        would carry, and the mask of those envs; None if there are none. Call it after the last
        step of a rollout so that no episode's metrics are lost; the next step will not repeat them."""
        self._settle()
        report, self._report = self._report, None
        return report

    def reset(self) -> torch.Tensor:
        self._settle()  # episodes that ended at the last step are still reported at the next
        self._start_episodes(torch.ones(self.num_envs, dtype=torch.bool, device=self.device), report=False)
        self._settle()
        return self.observe()

    def observe(self) -> torch.Tensor:
        if not self.cfg.target_obs:
            return self.obs.clone()
        nxt = self.reference_obs(self.motion_id, self.start_time + (self.progress + 1).float() * self.dt)
        return torch.cat([self.obs, nxt], 1)

    def step(self, actions: torch.Tensor):
        """One control step (0.0332 s); finished envs are reset (see ``base.VecEnv``).

        ``infos['episode_metrics']`` holds the metrics of the episodes that ended at the previous
        step, valid where ``infos['episode_ended']`` (their done mask): they are computed after this
        step's physics is launched, so that on the GPU the host never waits for the device within
        a step (see :meth:`flush_episode_metrics` for the last step's)."""
        cfg = self.cfg
        a = torch.clamp(actions.to(self.device, torch.float32), -1.0, 1.0)
        self.sim.step(sk.hinge_targets(self.pd_offset + self.pd_scale * a, self.lower, self.upper), PHYSICS_STEPS)
        self._settle()  # queued behind the physics: the host issues it while the GPU simulates
        obs, xpos, touch = self._sim_state()
        # a world whose physics blew up (non-finite, or reset by MuJoCo) ends its episode now; its
        # metrics are reported as NaN, which the trainer's meters and the evaluation leave out
        bad = ~(torch.isfinite(obs).all(1) & torch.isfinite(xpos).flatten(1).all(1)) | self.sim.unstable
        self.diverged |= bad
        obs = torch.where(bad[:, None], 0.0, obs)
        xpos = torch.where(bad[:, None, None], 0.0, xpos)
        self.obs = obs
        self.progress += 1
        terminate = bad
        if cfg.enable_early_termination:
            terminate = terminate | fallen(touch, xpos[..., 2], self.may_touch, cfg.termination_height, self.progress)
        time_out = (self.progress >= cfg.episode_length) & ~terminate
        done = terminate | time_out
        self.history = torch.cat([self.history[:, 1:], obs[:, None]], 1)
        rewards = []
        if "time" in self.reward_types:
            rewards.append(torch.ones(self.num_envs, device=self.device))
        if "dist" in self.reward_types:
            rewards.append((xpos[:, 0, 0] - self.prev_root_x).clamp(0.0, 0.5) / 0.5)
        reward = sum(rewards) / len(rewards)
        self.prev_root_x = xpos[:, 0, 0]
        col = self.progress.clamp(max=cfg.episode_length)
        rows = torch.arange(self.num_envs, device=self.device)
        self.root_path[rows, col] = xpos[:, 0]
        if cfg.episode_metrics:
            dist = (self._pose(xpos)[:, None] - self.ref_pose).norm(dim=-1)
            self.dtw_acc, self.dtw_len = metrics.dtw_step(self.dtw_acc, self.dtw_len, dist)
            self.dtw_sq = metrics.dtw_cost_step(self.dtw_sq, dist.square())
        infos = {"paired_obs": self.history.reshape(self.num_envs, -1), "time_outs": time_out.float(),
                 "terminate": terminate}
        if cfg.target_obs:  # the reference frame this step aimed at (tracking reward)
            infos["reference"] = self.reference_obs(self.motion_id, self.start_time + self.progress.float() * self.dt)
        if self._report is not None:
            (infos["episode_metrics"], infos["episode_ended"]), self._report = self._report, None
        self._start_episodes(done, report=True)
        return self.observe(), reward, done, infos

    # ------------------------------------------------------------------ metrics
    def _episode_metrics(self, ids: torch.Tensor, lengths: torch.Tensor,
                         bad: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N,) per-env metrics, valid at `ids`: the episodes of `lengths` steps that ended there
        (`bad`: their simulation diverged, NaN metrics); read before those rows start anew."""
        n = self.num_envs
        col = lengths + 1
        nb = float(len(sk.BODY_NAMES))
        vals = {
            "dtw_error": self.dtw_acc[ids, col] / self.dtw_len[ids, col] / nb,
            "mean_dtw_pose_error": self.dtw_sq[ids, col].clamp_min(0).sqrt() / nb,
        }
        frames = (lengths + 1).clamp(min=4)
        path = self.root_path[ids].double()
        for key, fn in (("root_velocity", metrics.root_velocity), ("root_acceleration", metrics.root_acceleration),
                        ("root_jerk", metrics.root_jerk)):
            vals[key] = vals[f"root_body_{key.removeprefix('root_')}"] = fn(path, self.dt, frames)
        # near's sparc (of the speed) and NEAR's spectral_arc_length (of each velocity axis,
        # averaged) in one batched FFT
        vel = torch.diff(path, dim=1) / self.dt
        rows = torch.cat([vel.norm(dim=-1), vel[..., 0], vel[..., 1], vel[..., 2]])
        arc = metrics.sparc(rows, self.dt, lengths=(frames - 1).repeat(4)).view(4, -1)
        vals["sparc"], vals["spectral_arc_length"] = arc[0], arc[1:].mean(0)
        table = torch.where(bad, math.nan, torch.stack(list(vals.values())).float())
        table = torch.zeros(len(vals), n, device=self.device).index_copy_(1, ids, table)
        return dict(zip(vals, table))

    def feature_mask(self, name: str | None) -> torch.Tensor | None:
        """``upper_body`` / ``lower_body``: the paired-obs features of those bodies (root features are lower body)."""
        if name in (None, "", "None"):
            return None
        if name not in self.masks:
            raise KeyError(f"humanoid env has no feature mask named {name!r} (known: {', '.join(self.masks)})")
        per = torch.zeros(sk.OBS_DIM, dtype=torch.bool)
        per[self.masks[name]] = True
        return per.repeat(self.num_obs_steps)

    # ------------------------------------------------------------------ checkpoints
    _KEYS = ("obs", "history", "motion_id", "start_time", "progress", "prev_root_x", "root_path", "ref_pose",
             "dtw_acc", "dtw_len", "dtw_sq", "diverged")

    def state_dict(self) -> dict:
        self._settle()  # the last resets' rows complete; their episodes' metrics go with the state
        qpos, qvel, _, _ = self.sim.read()
        out = {k: None if getattr(self, k) is None else getattr(self, k).clone() for k in self._KEYS}
        out.update({"qpos": qpos.double().cpu(), "qvel": qvel.double().cpu(), "generator": self.generator.get_state(),
                    "report": self._report})
        if hasattr(self.sim, "datas"):  # exact resume on the CPU: the full float64 physics state
            out["qpos"] = torch.stack([torch.from_numpy(d.qpos.copy()) for d in self.sim.datas])
            out["qvel"] = torch.stack([torch.from_numpy(d.qvel.copy()) for d in self.sim.datas])
            out["act"] = [d.qacc_warmstart.copy() for d in self.sim.datas]
        return out

    def load_state_dict(self, state: dict) -> None:
        for k in self._KEYS:
            if state.get(k) is not None:
                setattr(self, k, state[k].to(self.device))
        self._ended = None
        report = state.get("report")
        self._report = None if report is None else ({k: v.to(self.device) for k, v in report[0].items()},
                                                    report[1].to(self.device))
        if hasattr(self.sim, "datas"):
            for i, d in enumerate(self.sim.datas):
                d.qpos[:] = state["qpos"][i].numpy()
                d.qvel[:] = state["qvel"][i].numpy()
                d.qacc_warmstart[:] = state["act"][i]
                self.sim.mujoco.mj_forward(self.sim.model, d)
        else:
            every = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
            self.sim.set_state(every, state["qpos"].to(self.device), state["qvel"].to(self.device))
        self.generator.set_state(state["generator"].cpu())


@dataclasses.dataclass
class _Ended:
    """A step's resets, as :meth:`HumanoidEnv._settle` finds them at the next step."""

    mask: torch.Tensor                   # (N,) bool: the envs reset (done)
    ids: Callable[[], torch.Tensor]      # their indices (waits for the copy of `mask` alone)
    length: torch.Tensor                 # (N,) steps of the episodes that ended
    diverged: torch.Tensor               # (N,) bool: those episodes' simulation blew up
    start_body: torch.Tensor             # (N, 15, 3) body positions the new episodes start from (at theirs)
    report: bool                         # whether the ended episodes' metrics are reported


class HostIndices:
    """The indices of a (N,) bool tensor's True entries, as a long tensor on its device, read without
    waiting for the GPU's whole queue: :meth:`fetch` starts the copy of the mask into pinned host
    memory and returns a function that waits for that copy alone (``torch.nonzero`` would wait for
    everything queued before the call returns). On the CPU it is ``torch.nonzero``."""

    def __init__(self, n: int, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.host = torch.empty(n, dtype=torch.bool, pin_memory=True) if self.cuda else None

    def fetch(self, mask: torch.Tensor):
        if not self.cuda:
            return lambda: torch.nonzero(mask).flatten()
        self.host.copy_(mask, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()

        def wait() -> torch.Tensor:
            copied.synchronize()
            ids = torch.from_numpy(np.flatnonzero(self.host.numpy()))
            return ids.pin_memory().to(self.device, non_blocking=True)
        return wait


def fallen(touch: torch.Tensor, height: torch.Tensor, may_touch: torch.Tensor, termination_height: float,
           progress: torch.Tensor) -> torch.Tensor:
    """NEAR's early termination (its ``compute_humanoid_reset``): (N,) True where a body that may not
    touch (not one of ``contactBodies``) is in contact, with the floor or another body, and such a
    body, not necessarily the same one, is below `termination_height`; never in the first two steps
    (contact forces can linger from the reset). touch (N, B) bool, height (N, B), may_touch (B,) bool."""
    others = ~may_touch
    in_contact = (touch & others).any(1)
    low = ((height < termination_height) & others).any(1)
    return in_contact & low & (progress > 1)


def make_humanoid_env(task: HumanoidTask, num_envs: int, device: str, seed: int):
    """Registry factory for ``Humanoid*`` tasks: ``task.sim.backend`` picks the simulator."""
    backend = task.sim.backend or ("mujoco_warp" if str(device).startswith("cuda") else "mujoco")
    if backend == "isaacgym":
        from near.training.envs.isaacgym_guard import isaacgym_env

        return isaacgym_env(task.name, num_envs=num_envs, device=device, seed=seed)
    cfg = dataclasses.replace(task.env, num_envs=num_envs, backend=backend)
    return HumanoidEnv(cfg, device=device, seed=seed)
