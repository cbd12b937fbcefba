"""The humanoid's skeleton layout and the rotation math of its observation (pure torch).

Quaternions are ``(x, y, z, w)`` as in poselib and NEAR's motion files; MuJoCo's ``(w, x, y, z)``
is converted at the simulator boundary. The 28 hinges come in 12 joints: a 3-DoF joint is three
hinges about the body's x, y, z axes applied in that order (MuJoCo composes a body's joints
intrinsically, so its rotation is ``Rx(a) Ry(b) Rz(c)``), a 1-DoF joint (elbow, knee) one hinge
about y.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

MJCF_PATH = Path(__file__).with_name("amp_humanoid.xml")

#: the 15 bodies in MuJoCo's (depth-first) order, which is also poselib's node order
BODY_NAMES = (
    "pelvis", "torso", "head", "right_upper_arm", "right_lower_arm", "right_hand",
    "left_upper_arm", "left_lower_arm", "left_hand", "right_thigh", "right_shin", "right_foot",
    "left_thigh", "left_shin", "left_foot",
)
PARENTS = (-1, 0, 1, 1, 3, 4, 1, 6, 7, 0, 9, 10, 0, 12, 13)
#: bodies driven by a joint, and where each joint's hinges start in the 28 DoF
DOF_BODY_IDS = (1, 2, 3, 4, 6, 7, 9, 10, 11, 12, 13, 14)
DOF_OFFSETS = (0, 3, 6, 9, 10, 13, 14, 17, 18, 21, 24, 25, 28)
NUM_DOF = 28
KEY_BODIES = ("right_hand", "left_hand", "right_foot", "left_foot")
KEY_BODY_IDS = tuple(BODY_NAMES.index(b) for b in KEY_BODIES)
FOOT_IDS = (BODY_NAMES.index("right_foot"), BODY_NAMES.index("left_foot"))
#: named subsets of bodies (feature masks of composed energy models)
UPPER_BODY = ("torso", "head", "right_upper_arm", "right_lower_arm", "right_hand",
              "left_upper_arm", "left_lower_arm", "left_hand")
OBS_DIM = 1 + 6 + 3 + 3 + 52 + NUM_DOF + 3 * len(KEY_BODIES)  # 105


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of xyzw quaternions (broadcasting)."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ], -1)


def quat_conj(q: torch.Tensor) -> torch.Tensor:
    return torch.cat([-q[..., :3], q[..., 3:]], -1)


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors v (..., 3) by unit quaternions q (..., 4)."""
    u, w = q[..., :3], q[..., 3:]
    t = 2.0 * torch.cross(u, v, dim=-1)
    return v + w * t + torch.cross(u, t, dim=-1)


def axis_angle_quat(axis: int, angle: torch.Tensor) -> torch.Tensor:
    """Rotation by `angle` (...) about coordinate axis 0, 1 or 2."""
    half = 0.5 * angle
    out = torch.zeros(angle.shape + (4,), dtype=angle.dtype, device=angle.device)
    out[..., axis] = torch.sin(half)
    out[..., 3] = torch.cos(half)
    return out


def xyz_to_quat(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) hinge angles about x, y, z (intrinsic, MuJoCo's joint order) -> quaternion."""
    q = axis_angle_quat(0, angles[..., 0])
    q = quat_mul(q, axis_angle_quat(1, angles[..., 1]))
    return quat_mul(q, axis_angle_quat(2, angles[..., 2]))


def quat_to_xyz(q: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`xyz_to_quat`: intrinsic x-y-z angles of a rotation (b in [-pi/2, pi/2])."""
    x, y, z, w = q.unbind(-1)
    r02 = 2 * (x * z + w * y)
    r12 = 2 * (y * z - w * x)
    r22 = 1 - 2 * (x * x + y * y)
    r01 = 2 * (x * y - w * z)
    r00 = 1 - 2 * (y * y + z * z)
    return torch.stack([torch.atan2(-r12, r22), torch.asin(r02.clamp(-1, 1)), torch.atan2(-r01, r00)], -1)


def quat_to_tan_norm(q: torch.Tensor) -> torch.Tensor:
    """The rotated x axis and z axis (6 numbers): a continuous encoding of a rotation."""
    tan = torch.zeros(q.shape[:-1] + (3,), dtype=q.dtype, device=q.device)
    tan[..., 0] = 1.0
    norm = torch.zeros_like(tan)
    norm[..., 2] = 1.0
    return torch.cat([quat_rotate(q, tan), quat_rotate(q, norm)], -1)


def heading_inv(q: torch.Tensor) -> torch.Tensor:
    """Rotation about z that undoes the heading (yaw of the rotated x axis) of q."""
    x_axis = torch.zeros(q.shape[:-1] + (3,), dtype=q.dtype, device=q.device)
    x_axis[..., 0] = 1.0
    fwd = quat_rotate(q, x_axis)
    heading = torch.atan2(fwd[..., 1], fwd[..., 0])
    return axis_angle_quat(2, -heading)


_SPHERICAL = [j for j in range(len(DOF_OFFSETS) - 1) if DOF_OFFSETS[j + 1] - DOF_OFFSETS[j] == 3]
#: hinge indices of the 3-DoF joints (8, 3) and of the 1-DoF ones (4,)
_SPHERICAL_DOF = [[DOF_OFFSETS[j] + k for k in range(3)] for j in _SPHERICAL]
_HINGE_DOF = [DOF_OFFSETS[j] for j in range(len(DOF_OFFSETS) - 1) if j not in _SPHERICAL]


def _dof_obs_layout() -> tuple[list[int], list[int]]:
    """Where each 3-DoF joint's 6 numbers and each hinge's angle go in the 52-wide dof observation."""
    sph, hinge, o = [], [], 0
    for j in range(len(DOF_OFFSETS) - 1):
        if j in _SPHERICAL:
            sph += list(range(o, o + 6))
            o += 6
        else:
            hinge.append(o)
            o += 1
    return sph, hinge


_SPH_OUT, _HINGE_OUT = _dof_obs_layout()


def dof_obs(dof_pos: torch.Tensor) -> torch.Tensor:
    """(..., 28) hinge angles -> (..., 52): tan-norm of each 3-DoF joint, the 1-DoF angles as they are
    (in joint order; all joints in one batched call)."""
    sph = quat_to_tan_norm(xyz_to_quat(dof_pos[..., _SPHERICAL_DOF]))      # (..., 8, 6)
    out = torch.empty(dof_pos.shape[:-1] + (52,), dtype=dof_pos.dtype, device=dof_pos.device)
    out[..., _SPH_OUT] = sph.flatten(-2)
    out[..., _HINGE_OUT] = dof_pos[..., _HINGE_DOF]
    return out


def humanoid_obs(root_pos: torch.Tensor, root_rot: torch.Tensor, root_vel: torch.Tensor, root_ang_vel: torch.Tensor,
                 dof_pos: torch.Tensor, dof_vel: torch.Tensor, key_pos: torch.Tensor,
                 local_root_obs: bool = False) -> torch.Tensor:
    """NEAR's 105-dim AMP observation of one state (all velocities in the world frame).

    root height (1), root rotation tan-norm (6; heading-relative if `local_root_obs`), heading-local
    root linear and angular velocity (3 + 3), :func:`dof_obs` (52), hinge velocities (28), the key
    bodies (hands, feet; (..., 4, 3) world positions) relative to the root in the heading frame (12).
    """
    h_inv = heading_inv(root_rot)
    rot = quat_mul(h_inv, root_rot) if local_root_obs else root_rot
    key_local = quat_rotate(h_inv.unsqueeze(-2).expand(key_pos.shape[:-1] + (4,)), key_pos - root_pos.unsqueeze(-2))
    return torch.cat([
        root_pos[..., 2:3], quat_to_tan_norm(rot), quat_rotate(h_inv, root_vel), quat_rotate(h_inv, root_ang_vel),
        dof_obs(dof_pos), dof_vel, key_local.flatten(-2),
    ], -1)


def pd_offset_scale(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Action -> PD target map of NEAR: 3-DoF joints span +-pi, a hinge 0.7 x its range around its middle."""
    low, high = lower.clone(), upper.clone()
    for j in range(len(DOF_OFFSETS) - 1):
        a, b = DOF_OFFSETS[j], DOF_OFFSETS[j + 1]
        if b - a == 3:
            low[a:b], high[a:b] = -math.pi, math.pi
        else:
            mid, half = 0.5 * (upper[a] + lower[a]), 0.7 * (upper[a] - lower[a])
            low[a], high[a] = mid - half, mid + half
    return 0.5 * (high + low), 0.5 * (high - low)


def local_to_dof(local_rot: torch.Tensor) -> torch.Tensor:
    """(..., 15, 4) local body rotations -> (..., 28) hinge angles (exact for the 3-DoF joints;
    a 1-DoF joint takes its rotation's twist about y)."""
    out = []
    for j, body in enumerate(DOF_BODY_IDS):
        q = local_rot[..., body, :]
        if DOF_OFFSETS[j + 1] - DOF_OFFSETS[j] == 3:
            out.append(quat_to_xyz(q))
        else:
            angle = 2 * torch.atan2(q[..., 1], q[..., 3])
            out.append(torch.remainder(angle + math.pi, 2 * math.pi).sub(math.pi).unsqueeze(-1))
    return torch.cat(out, -1)


def forward_kinematics(local_rot: torch.Tensor, root_pos: torch.Tensor,
                       local_translation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global body positions and rotations (..., 15, 3 / 4) of a pose given by local rotations."""
    pos, rot = [root_pos], [local_rot[..., 0, :]]
    for j in range(1, len(PARENTS)):
        p = PARENTS[j]
        pos.append(pos[p] + quat_rotate(rot[p], local_translation[j].expand_as(root_pos)))
        rot.append(quat_mul(rot[p], local_rot[..., j, :]))
    return torch.stack(pos, -2), torch.stack(rot, -2)
