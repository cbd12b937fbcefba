"""NEAR's humanoid motion files, read unchanged, and batched lookup of reference states.

A motion file is a poselib ``SkeletonMotion`` saved with ``np.save``: a dict with
``rotation`` (T, 15, 4) local xyzw quaternions, ``root_translation`` (T, 3),
``global_velocity`` / ``global_angular_velocity`` (T, 15, 3), ``skeleton_tree``
(``node_names``, ``parent_indices``, ``local_translation``), ``is_local`` and ``fps``; every array
as ``{"arr": ndarray, "context": {"dtype": ...}}``. A motion list is NEAR's ``.yaml``
(``motions: [{file, weight}]``, paths relative to the yaml).

``task.env.motion_file`` is a ``.npy``, a ``.yaml``, or the name of a synthetic motion
(``walk``, ``run``, ``crane_pose``; see :mod:`.synthetic`), which is used only by that name. A
``.yaml`` / ``.npy`` path is looked up as given (an absolute path, or relative to the working
directory), then in each folder of ``$NEAR_MOTION_DIR`` (a NEAR checkout, or its
``isaacgymenvs/custom_envs/data/humanoid``: NEAR's own command lines, ``motion_file:
amp_humanoid_walk.yaml``, then run unchanged), then in ``cfg/task/motions/humanoid/`` (git-ignored;
code snapshots link to it rather than copy it); a file found nowhere is an error naming the places
looked in. No conversion is needed.
:func:`motion_sources` lists the files a spec resolves to, with their content hashes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from near.errors import ConfigError
from near.training.envs.humanoid import skeleton as sk
from near.training.motions import read_motion_list

MOTION_DIR = Path(__file__).resolve().parents[4] / "cfg" / "task" / "motions" / "humanoid"


@dataclass
class HumanoidMotion:
    """One clip, in the simulator's terms (all float32 torch tensors on the CPU)."""

    name: str
    fps: float
    root_pos: torch.Tensor        # (T, 3)
    root_rot: torch.Tensor        # (T, 4) xyzw
    root_vel: torch.Tensor        # (T, 3) world
    root_ang_vel: torch.Tensor    # (T, 3) world
    joint_rot: torch.Tensor       # (T, 12, 4) local rotations of the 12 joints' bodies
    dof_pos: torch.Tensor         # (T, 28) NEAR's dof (exp maps of the 3-DoF joints)
    dof_vel: torch.Tensor         # (T, 28) NEAR's dof velocity (frame to next frame)
    body_pos: torch.Tensor        # (T, 15, 3) world
    weight: float = 1.0

    @property
    def num_frames(self) -> int:
        return int(self.root_pos.shape[0])

    @property
    def duration(self) -> float:
        return (self.num_frames - 1) / self.fps


def _array(entry: Any, key: str, path: Path) -> np.ndarray:
    if isinstance(entry, dict) and "arr" in entry:
        entry = entry["arr"]
    try:
        return np.asarray(entry, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"motion file {path}: '{key}' is not a numeric array") from None


def motion_from_dict(d: dict, name: str, path: Path) -> HumanoidMotion:
    """Check a poselib SkeletonMotion dict against the humanoid and convert it (clear errors)."""
    for key in ("rotation", "root_translation", "skeleton_tree"):
        if key not in d:
            raise ConfigError(f"motion file {path}: missing '{key}' (not a poselib SkeletonMotion .npy)")
    tree = d["skeleton_tree"]
    names = [str(n) for n in tree.get("node_names", [])] if isinstance(tree, dict) else []
    if tuple(names) != sk.BODY_NAMES:
        raise ConfigError(f"motion file {path}: skeleton {names} does not match the humanoid's 15 bodies "
                          f"{list(sk.BODY_NAMES)}")
    rot = _array(d["rotation"], "rotation", path)
    root = _array(d["root_translation"], "root_translation", path)
    if rot.ndim != 3 or rot.shape[1:] != (15, 4) or root.shape != (rot.shape[0], 3) or rot.shape[0] < 2:
        raise ConfigError(f"motion file {path}: expected rotation (T, 15, 4) and root_translation (T, 3) with T >= 2, "
                          f"got {rot.shape} and {root.shape}")
    if not bool(d.get("is_local", True)):
        raise ConfigError(f"motion file {path}: is_local=False (global rotations) is not supported; save local rotations")
    fps = float(d.get("fps", 30))
    local_t = torch.as_tensor(_array(tree["local_translation"], "local_translation", path), dtype=torch.float64)
    if tuple(local_t.shape) != (15, 3):
        raise ConfigError(f"motion file {path}: skeleton_tree.local_translation must be (15, 3), got {tuple(local_t.shape)}")
    q = torch.as_tensor(rot)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    root_t = torch.as_tensor(root)
    body_pos, _ = sk.forward_kinematics(q, root_t, local_t)
    vel = d.get("global_velocity")
    avel = d.get("global_angular_velocity")
    if vel is not None and avel is not None:
        vel, avel = _array(vel, "global_velocity", path), _array(avel, "global_angular_velocity", path)
        if vel.shape != (rot.shape[0], 15, 3) or avel.shape != vel.shape:
            raise ConfigError(f"motion file {path}: global_velocity / global_angular_velocity must be (T, 15, 3), "
                              f"got {vel.shape} / {avel.shape}")
        root_vel, root_ang = torch.as_tensor(vel[:, 0]), torch.as_tensor(avel[:, 0])
    else:
        root_vel = torch.as_tensor(np.gradient(root, axis=0) * fps)
        root_ang = torch.zeros_like(root_vel)
    jq = sk.joint_quats(q)
    # NEAR's dof velocity: each frame to the next, the last frame repeating the one before
    dof_vel = sk.dof_velocity_from_frames(jq[:-1], jq[1:], 1.0 / fps)
    dof_vel = torch.cat([dof_vel, dof_vel[-1:]])
    f32 = lambda t: t.to(torch.float32).contiguous()  # noqa: E731
    return HumanoidMotion(name, fps, f32(root_t), f32(q[:, 0]), f32(root_vel), f32(root_ang), f32(jq),
                          f32(sk.dof_from_quats(jq)), f32(dof_vel), f32(body_pos))


def load_npy(path: Path) -> HumanoidMotion:
    if not path.is_file():
        raise ConfigError(f"motion file {path} not found")
    try:
        d = np.load(path, allow_pickle=True).item()
    except Exception as err:
        raise ConfigError(f"motion file {path} is unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"motion file {path}: expected an np.save'd dict (poselib SkeletonMotion)")
    return motion_from_dict(d, path.stem, path)


#: inside a NEAR checkout, where its humanoid motion files are
NEAR_DATA = Path("isaacgymenvs") / "custom_envs" / "data" / "humanoid"


def motion_dirs(base: Path | None = None) -> list[Path]:
    """The folders relative motion files are looked up in: each of ``$NEAR_MOTION_DIR``
    (``os.pathsep``-separated; a NEAR checkout stands for its data folder), then ``base``
    (``MOTION_DIR``, this checkout's ``cfg/task/motions/humanoid``, unless another is named)."""
    dirs = []
    for entry in filter(None, os.environ.get("NEAR_MOTION_DIR", "").split(os.pathsep)):
        d = Path(entry).expanduser()
        dirs.append(d / NEAR_DATA if (d / NEAR_DATA).is_dir() else d)
    return [*dirs, MOTION_DIR if base is None else base]


def _candidates(spec: str) -> list[Path]:
    p = Path(spec).expanduser()
    return [p, *(c for d in motion_dirs() for c in (d / p, d / p.name))]


def _find(spec: str) -> Path | None:
    return next((c for c in _candidates(spec) if c.is_file()), None)


def listed_clips(path: Path) -> list[tuple[Path, float]]:
    """The clips a NEAR motion list names (relative to the list) with their weights; ConfigError
    naming the list, the entry and the path looked for when a clip is missing."""
    out = []
    for i, (file, weight) in enumerate(read_motion_list(path)):
        clip = path.parent / file
        if not clip.is_file():
            raise ConfigError(f"{path}: motions[{i}] names {file!r}, not found (looked for {clip})")
        out.append((clip, weight))
    return out


def load_yaml(path: Path) -> list[HumanoidMotion]:
    """The motions a NEAR motion list names, files relative to the list, each with its weight."""
    out = []
    for clip, weight in listed_clips(path):
        motion = load_npy(clip)
        motion.weight = weight
        out.append(motion)
    return out


def resolve(spec: str) -> tuple[Path, bool]:
    """The file ``task.env.motion_file`` names and whether it is a synthetic clip (by its name
    only); ConfigError naming the file and every place looked in when there is none."""
    from near.training.envs.humanoid import synthetic

    spec = str(spec).strip()
    if spec in synthetic.MOTIONS:
        return synthetic.cached_file(spec), True
    found = _find(spec) if spec.endswith((".yaml", ".yml", ".npy")) else None
    if found is None:
        looked = ", ".join(dict.fromkeys(str(c.resolve()) for c in _candidates(spec)))
        raise ConfigError(f"motion file {spec!r} (task.env.motion_file) not found (looked in: {looked}); put "
                          f"NEAR's file there or pass its path, or name a synthetic clip ({', '.join(synthetic.MOTIONS)})")
    return found, False


def load_motions(spec: str) -> list[HumanoidMotion]:
    """The motions ``task.env.motion_file`` names (see the module docstring for the lookup)."""
    path, _ = resolve(spec)
    return load_yaml(path) if path.suffix in (".yaml", ".yml") else [load_npy(path)]


def motion_sources(spec: str) -> list[dict[str, Any]]:
    """Every file ``spec`` reads (a motion list and the clips it names), with its sha256 and whether
    it is a synthetic clip: what a run records in ``motions.json``."""
    path, synthetic = resolve(spec)
    files = [path] + ([clip for clip, _ in listed_clips(path)] if path.suffix in (".yaml", ".yml") else [])
    return [{"motion_file": str(spec), "file": str(f.resolve()), "sha256": _sha256(f), "synthetic": synthetic}
            for f in files]


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MotionTable:
    """All clips padded into batched tables on one device; state lookup at (motion id, time)."""

    FIELDS = ("root_pos", "root_rot", "root_vel", "root_ang_vel", "joint_rot", "dof_vel", "body_pos")

    def __init__(self, motions: list[HumanoidMotion], device: torch.device):
        self.motions = motions
        self.device = device
        t_max = max(m.num_frames for m in motions)
        self.weights = torch.tensor([m.weight for m in motions], device=device)
        self.num_frames = torch.tensor([m.num_frames for m in motions], device=device)
        self.fps = torch.tensor([m.fps for m in motions], device=device)
        self.duration = torch.tensor([m.duration for m in motions], device=device)
        self.last_frame = t_max - 1  # a Python int: no device sync per lookup
        for field in self.FIELDS:
            first = getattr(motions[0], field)
            table = torch.zeros((len(motions), t_max) + tuple(first.shape[1:]), device=device)
            for k, m in enumerate(motions):
                val = getattr(m, field).to(device)
                table[k, : m.num_frames] = val
                table[k, m.num_frames:] = val[-1]  # hold the last frame
            setattr(self, field, table)

    def _frames(self, motion_id: torch.Tensor, time: torch.Tensor):
        """NEAR's frame blend: the frames around `time` (clamped to the clip) and the weight of the second."""
        t = time.clamp(min=0.0).minimum(self.duration[motion_id])
        f = t * self.fps[motion_id]
        i0 = torch.floor(f).long().clamp(max=self.last_frame)
        i1 = torch.minimum(i0 + 1, self.num_frames[motion_id] - 1)
        return i0, i1, f - i0.float()

    def state(self, motion_id: torch.Tensor, time: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reference state at `time` seconds (clamped to the clip), as NEAR's motion library gives
        it: positions interpolated linearly, rotations by slerp, NEAR's dof from the interpolated
        joint rotations, and the velocities of the frame before (not interpolated)."""
        i0, i1, w = self._frames(motion_id, time)
        w = w[..., None]
        out = {}
        for field in ("root_vel", "root_ang_vel", "dof_vel"):
            out[field] = getattr(self, field)[motion_id, i0]
        out["root_pos"] = torch.lerp(self.root_pos[motion_id, i0], self.root_pos[motion_id, i1], w)
        out["body_pos"] = torch.lerp(self.body_pos[motion_id, i0], self.body_pos[motion_id, i1], w[..., None])
        out["root_rot"] = sk.slerp(self.root_rot[motion_id, i0], self.root_rot[motion_id, i1], w)
        out["joint_rot"] = sk.slerp(self.joint_rot[motion_id, i0], self.joint_rot[motion_id, i1], w[..., None])
        out["dof_pos"] = sk.dof_from_quats(out["joint_rot"])
        return out

    def body_positions(self, motion_id: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Only the (..., 15, 3) body positions of :meth:`state` (episode metrics need no more)."""
        i0, i1, w = self._frames(motion_id, time)
        return torch.lerp(self.body_pos[motion_id, i0], self.body_pos[motion_id, i1], w[..., None, None])
