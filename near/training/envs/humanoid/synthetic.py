"""Synthetic reference motions for the humanoid, written as poselib ``SkeletonMotion`` .npy files.

No motion capture ships with any package here, so near generates its own clips: kinematic
keyframe curves of the 28 hinge angles (a walk cycle, a run cycle, a held crane pose), put
through MuJoCo's forward kinematics of ``amp_humanoid.xml``; the root height of every frame puts
the lowest foot corner on the floor. These are *synthetic*, not mocap: plausible gaits for
tests, the demo and learning checks, nothing more. The files have NEAR's format, so the same
loader reads NEAR's real clips.

    python -m near.training.envs.humanoid.synthetic walk run crane_pose --out DIR

writes ``DIR/amp_humanoid_<name>.npy`` and a NEAR-style ``DIR/amp_humanoid_<name>.yaml`` list.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import torch

from near.training.envs.humanoid import skeleton as sk

FPS = 30
VERSION = 1


def _joint(name: str) -> int:
    """Index of a hinge in the 28 DoF (MuJoCo's joint order minus the free joint)."""
    return _JOINTS.index(name)


_JOINTS = [f"{b}_{a}" for b in ("abdomen", "neck", "right_shoulder") for a in "xyz"] + ["right_elbow"] + \
          [f"left_shoulder_{a}" for a in "xyz"] + ["left_elbow"] + [f"right_hip_{a}" for a in "xyz"] + \
          ["right_knee"] + [f"right_ankle_{a}" for a in "xyz"] + [f"left_hip_{a}" for a in "xyz"] + ["left_knee"] + \
          [f"left_ankle_{a}" for a in "xyz"]


def _gait(t: np.ndarray, period: float, hip: float, knee: float, knee_bias: float, arm: float, elbow: float,
          lean: float) -> np.ndarray:
    phi = 2 * math.pi * t / period
    q = np.zeros((len(t), sk.NUM_DOF))
    s, c = np.sin(phi), np.cos(phi)
    q[:, _joint("right_hip_y")] = -hip * s
    q[:, _joint("left_hip_y")] = hip * s
    q[:, _joint("right_knee")] = knee_bias + knee * np.maximum(0.0, c)
    q[:, _joint("left_knee")] = knee_bias + knee * np.maximum(0.0, -c)
    for side in ("right", "left"):  # keep the feet level: ankle undoes hip + knee pitch
        q[:, _joint(f"{side}_ankle_y")] = -(q[:, _joint(f"{side}_hip_y")] + q[:, _joint(f"{side}_knee")])
    q[:, _joint("right_shoulder_y")] = arm * s
    q[:, _joint("left_shoulder_y")] = -arm * s
    q[:, _joint("right_shoulder_x")] = -0.15
    q[:, _joint("left_shoulder_x")] = 0.15
    q[:, _joint("right_elbow")] = -elbow
    q[:, _joint("left_elbow")] = -elbow
    q[:, _joint("abdomen_y")] = lean
    q[:, _joint("abdomen_z")] = 0.08 * s
    return q


def _walk(t):
    return _gait(t, 1.1, 0.4, 0.6, 0.08, 0.35, 0.35, 0.05), 1.2


def _run(t):
    return _gait(t, 0.7, 0.7, 1.3, 0.2, 0.6, 1.4, 0.2), 3.0


def _crane(t):
    q = np.zeros((len(t), sk.NUM_DOF))
    sway = 0.05 * np.sin(2 * math.pi * t / 3.0)
    q[:, _joint("right_hip_y")] = -1.1
    q[:, _joint("right_knee")] = 1.6
    q[:, _joint("right_ankle_y")] = -0.3
    q[:, _joint("left_knee")] = 0.05
    q[:, _joint("right_shoulder_x")] = -1.45 + sway
    q[:, _joint("left_shoulder_x")] = 1.45 - sway
    q[:, _joint("right_elbow")] = -0.2
    q[:, _joint("left_elbow")] = -0.2
    return q, 0.0


#: name -> (duration in s, keyframes(t) -> (hinge angles (T, 28), forward speed m/s))
MOTIONS = {"walk": (10.0, _walk), "run": (10.0, _run), "crane_pose": (6.0, _crane)}


def _wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    return np.concatenate([q[..., 1:], q[..., :1]], -1)


def _angular_velocity(rot: torch.Tensor, fps: float) -> torch.Tensor:
    """World angular velocities (T, B, 3) of rotations (T, B, 4) by central differences."""
    prev = torch.cat([rot[:1], rot[:-1]])
    nxt = torch.cat([rot[1:], rot[-1:]])
    steps = torch.full((rot.shape[0], 1, 1), 2.0, dtype=rot.dtype)
    steps[0], steps[-1] = 1.0, 1.0
    dq = sk.quat_mul(nxt, sk.quat_conj(prev))
    dq = torch.where(dq[..., 3:] < 0, -dq, dq)
    vec = dq[..., :3]
    norm = vec.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(norm, dq[..., 3:])
    axis = vec / norm.clamp_min(1e-12)
    return axis * angle * fps / steps


def generate(name: str) -> dict:
    """The synthetic clip `name` as a poselib SkeletonMotion dict (what ``np.save`` writes)."""
    import mujoco

    duration, keys = MOTIONS[name]
    t = np.arange(int(round(duration * FPS)) + 1) / FPS
    dof, speed = keys(t)
    model = mujoco.MjModel.from_xml_path(str(sk.MJCF_PATH))
    data = mujoco.MjData(model)
    foot_geoms = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in ("right_foot", "left_foot")]
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    xquat = np.zeros((len(t), 16, 4))
    xpos = np.zeros((len(t), 16, 3))
    for i in range(len(t)):
        data.qpos[:] = 0.0
        data.qpos[0] = speed * t[i]
        data.qpos[2] = 1.0
        data.qpos[3] = 1.0
        data.qpos[7:] = dof[i]
        mujoco.mj_kinematics(model, data)
        lowest = min(float((data.geom_xpos[g][:, None] + data.geom_xmat[g].reshape(3, 3) @ (corners * model.geom_size[g]).T)[2].min())
                     for g in foot_geoms)
        data.qpos[2] = 1.0 - lowest + 0.002
        mujoco.mj_kinematics(model, data)
        xquat[i], xpos[i] = data.xquat, data.xpos
    glob = torch.as_tensor(_wxyz_to_xyzw(xquat[:, 1:]))
    parents = list(sk.PARENTS)
    local = glob.clone()
    for j in range(1, 15):
        local[:, j] = sk.quat_mul(sk.quat_conj(glob[:, parents[j]]), glob[:, j])
    pos = xpos[:, 1:]
    vel = np.gradient(pos, axis=0) * FPS
    ang = _angular_velocity(glob, FPS).numpy()
    local_translation = model.body_pos[1:].copy()
    local_translation[0] = 0.0
    arr = lambda x, dtype="float32": {"arr": np.asarray(x, dtype=dtype), "context": {"dtype": dtype}}  # noqa: E731
    return {
        "rotation": arr(local.numpy()),
        "root_translation": arr(pos[:, 0]),
        "global_velocity": arr(vel),
        "global_angular_velocity": arr(ang),
        "skeleton_tree": {
            "node_names": list(sk.BODY_NAMES),
            "parent_indices": arr(np.array(parents), "int64"),
            "local_translation": arr(local_translation),
        },
        "is_local": True,
        "fps": FPS,
        "__name__": "SkeletonMotion",
    }


def write(name: str, out_dir: str | os.PathLike) -> Path:
    """Write ``amp_humanoid_<name>.npy`` and its one-line ``.yaml`` list into `out_dir` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    npy = out / f"amp_humanoid_{name}.npy"
    tmp = out / f".{npy.name}.tmp-{os.getpid()}.npy"
    np.save(tmp, generate(name), allow_pickle=True)
    os.replace(tmp, npy)
    yml = out / f"amp_humanoid_{name}.yaml"
    yml.write_text(f"# synthetic {name} (near.training.envs.humanoid.synthetic), not motion capture\n"
                   f"motions:\n- file: {npy.name}\n  weight: 1.0\n")
    return npy


def cached_file(name: str) -> Path:
    """The synthetic clip's .npy in near's cache (generated on first use)."""
    from near.training.cache import cache_root

    path = Path(cache_root()) / "humanoid" / f"v{VERSION}" / f"amp_humanoid_{name}.npy"
    if not path.is_file():
        write(name, path.parent)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m near.training.envs.humanoid.synthetic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(MOTIONS))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    for name in args.names:
        print(write(name, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
