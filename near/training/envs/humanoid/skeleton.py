"""The humanoid's skeleton layout and the rotation math of its observation (pure torch).

Quaternions are ``(x, y, z, w)`` as in poselib and NEAR's motion files; MuJoCo's ``(w, x, y, z)``
is converted at the simulator boundary. The 28 DoF come in 12 joints: a 3-DoF joint (abdomen,
neck, shoulders, hips, ankles) and a 1-DoF one (elbows, knees, about y).

Two coordinate systems for the same rotations:

* NEAR's (``dof``): a 3-DoF joint is the exponential map of its local rotation (Isaac Gym imports
  the three hinges of a body as one spherical joint), a 1-DoF joint the rotation angle times the
  axis' y component; velocities are NEAR's finite differences of local rotations
  (:func:`local_angular_velocity`: angular velocity in the child's frame). Observations, actions
  and motion files use these.
* MuJoCo's (``hinges``): the three hinges of a body about x, y, z, composed intrinsically
  (``Rx(a) Ry(b) Rz(c)``), and their rates. :func:`hinges_from_quats` picks, of the two hinge
  triples of a rotation, the one nearer the joint limits; :func:`hinge_rates` and
  :func:`dof_velocity` map velocities between the two.
"""

from __future__ import annotations

import functools
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
    """(..., 3) hinge angles about x, y, z (intrinsic, MuJoCo's joint order) -> quaternion: the
    product Rx(a) Ry(b) Rz(c) written out (its zero terms dropped: the same numbers as
    :func:`quat_mul` of the three, in a fifth of the kernels)."""
    half = 0.5 * angles
    s, c = torch.sin(half), torch.cos(half)
    sa, sb, sc = s.unbind(-1)
    ca, cb, cc = c.unbind(-1)
    x, y, z, w = sa * cb, ca * sb, sa * sb, ca * cb  # Rx(a) Ry(b)
    return torch.stack([x * cc + y * sc, y * cc - x * sc, w * sc + z * cc, w * cc - z * sc], -1)


def quat_to_xyz(q: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`xyz_to_quat`: intrinsic x-y-z angles of a rotation (b in [-pi/2, pi/2])."""
    x, y, z, w = q.unbind(-1)
    r02 = 2 * (x * z + w * y)
    r12 = 2 * (y * z - w * x)
    r22 = 1 - 2 * (x * x + y * y)
    r01 = 2 * (x * y - w * z)
    r00 = 1 - 2 * (y * y + z * z)
    return torch.stack([torch.atan2(-r12, r22), torch.asin(r02.clamp(-1, 1)), torch.atan2(-r01, r00)], -1)


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of unit quaternions (..., 4) by t (..., 1), the shorter way round;
    nearly equal rotations are averaged (NEAR's motion library)."""
    cos_half = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(cos_half < 0, -q1, q1)
    cos_half = cos_half.abs().clamp(max=1.0)
    half = torch.acos(cos_half)
    sin_half = torch.sqrt(1.0 - cos_half * cos_half)
    safe = sin_half.clamp_min(1e-3)
    out = (torch.sin((1 - t) * half) * q0 + torch.sin(t * half) * q1) / safe
    return torch.where(sin_half < 1e-3, 0.5 * (q0 + q1), out)


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
#: DoF indices of the 3-DoF joints (8, 3) and of the 1-DoF ones (4,)
_SPHERICAL_DOF = [[DOF_OFFSETS[j] + k for k in range(3)] for j in _SPHERICAL]
_HINGE_DOF = [DOF_OFFSETS[j] for j in range(len(DOF_OFFSETS) - 1) if j not in _SPHERICAL]
_SPH_FLAT = [i for row in _SPHERICAL_DOF for i in row]
_HINGE_JOINT = [j for j in range(len(DOF_OFFSETS) - 1) if j not in _SPHERICAL]
_MIN_ANGLE = 1e-5  # NEAR's: below it a rotation's axis is undefined and its angle taken as 0

@functools.lru_cache(maxsize=None)
def _index(key: tuple, device: str) -> torch.Tensor:
    return torch.tensor(key, dtype=torch.long, device=device)


def ix(seq, like: torch.Tensor) -> torch.Tensor:
    """`seq` (a list of indices, or of lists) as an index tensor on `like`'s device, made once per
    device: indexing a CUDA tensor with a Python list copies the list to the GPU and waits for it
    on every call."""
    key = tuple(tuple(r) if isinstance(r, (list, tuple)) else r for r in seq)
    return _index(key, str(like.device))



def _wrap(x: torch.Tensor) -> torch.Tensor:
    """Angles onto (-pi, pi] (NEAR's normalize_angle)."""
    return torch.atan2(torch.sin(x), torch.cos(x))


def quat_to_exp_map(q: torch.Tensor) -> torch.Tensor:
    """NEAR's exponential map of unit quaternions: angle (wrapped onto (-pi, pi]) times axis."""
    w = q[..., 3:].clamp(-1.0, 1.0)
    sin_half = torch.sqrt((1.0 - w * w).clamp_min(0.0))
    angle = _wrap(2.0 * torch.acos(w))
    axis = q[..., :3] / sin_half.clamp_min(_MIN_ANGLE)
    return torch.where(sin_half > _MIN_ANGLE, angle * axis, torch.zeros_like(axis))


def exp_map_to_quat(e: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quat_to_exp_map`: rotation by ``|e|`` about ``e / |e|``."""
    angle = e.norm(dim=-1, keepdim=True)
    half = 0.5 * angle
    # sin(a/2)/a -> 1/2 as a -> 0; the series avoids 0/0 without a branch
    scale = torch.where(angle > _MIN_ANGLE, torch.sin(half) / angle.clamp_min(_MIN_ANGLE), 0.5 - angle * angle / 48.0)
    return torch.cat([e * scale, torch.cos(half)], -1)


def local_angular_velocity(q0: torch.Tensor, q1: torch.Tensor, dt: float | torch.Tensor) -> torch.Tensor:
    """NEAR's velocity of local rotations from q0 to q1 over dt: the axis of ``q0^-1 q1`` times its
    angle (``acos(2 w^2 - 1)``, in [0, pi]) / dt. The axis keeps the sign of the quaternion's vector
    part, as poselib's ``quat_angle_axis`` does (so a difference with w < 0 points backwards)."""
    d = quat_mul(quat_conj(q0), q1)
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    angle = torch.acos((2.0 * d[..., 3:] ** 2 - 1.0).clamp(-1.0, 1.0))
    axis = d[..., :3] / d[..., :3].norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return axis * angle / dt


def joint_quats(local_rot: torch.Tensor) -> torch.Tensor:
    """(..., 15, 4) local body rotations -> (..., 12, 4) those of the 12 joints' bodies."""
    return local_rot[..., ix(DOF_BODY_IDS, local_rot), :]


def dof_from_quats(jq: torch.Tensor) -> torch.Tensor:
    """(..., 12, 4) joint rotations -> (..., 28) NEAR's dof: exp map of each 3-DoF joint, angle
    times the axis' y component of each 1-DoF one (NEAR's ``_local_rotation_to_dof``)."""
    out = torch.empty(jq.shape[:-2] + (NUM_DOF,), dtype=jq.dtype, device=jq.device)
    out[..., ix(_SPH_FLAT, out)] = quat_to_exp_map(jq[..., ix(_SPHERICAL, jq), :]).flatten(-2)
    hinge = jq[..., ix(_HINGE_JOINT, jq), :]
    w = hinge[..., 3].clamp(-1.0, 1.0)
    sin_half = torch.sqrt((1.0 - w * w).clamp_min(0.0))
    angle = _wrap(2.0 * torch.acos(w)) * hinge[..., 1] / sin_half.clamp_min(_MIN_ANGLE)
    out[..., ix(_HINGE_DOF, out)] = _wrap(torch.where(sin_half > _MIN_ANGLE, angle, torch.zeros_like(angle)))
    return out


def quats_from_dof(dof: torch.Tensor) -> torch.Tensor:
    """(..., 28) NEAR's dof -> (..., 12, 4) joint rotations (1-DoF joints about y)."""
    out = torch.empty(dof.shape[:-1] + (len(DOF_OFFSETS) - 1, 4), dtype=dof.dtype, device=dof.device)
    out[..., ix(_SPHERICAL, out), :] = exp_map_to_quat(dof[..., ix(_SPHERICAL_DOF, dof)])
    out[..., ix(_HINGE_JOINT, out), :] = axis_angle_quat(1, dof[..., ix(_HINGE_DOF, dof)])
    return out


def dof_velocity_from_frames(jq0: torch.Tensor, jq1: torch.Tensor, dt: float | torch.Tensor) -> torch.Tensor:
    """(..., 12, 4) joint rotations of two frames -> (..., 28) NEAR's dof velocity (the local angular
    velocity of a 3-DoF joint, its y component for a 1-DoF one)."""
    vel = local_angular_velocity(jq0, jq1, dt)
    out = torch.empty(vel.shape[:-2] + (NUM_DOF,), dtype=vel.dtype, device=vel.device)
    out[..., ix(_SPH_FLAT, out)] = vel[..., ix(_SPHERICAL, vel), :].flatten(-2)
    out[..., ix(_HINGE_DOF, out)] = vel[..., ix(_HINGE_JOINT, vel), 1]
    return out


def _limit_excess(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    return ((lower - x).clamp_min(0) + (x - upper).clamp_min(0)).sum(-1)


def _nearer_triple(q: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """(..., 8, 4) rotations of the 3-DoF joints -> (..., 24) hinge angles: of a rotation's two x-y-z
    triples, ``(a, b, c)`` and ``(a + pi, pi - b, c + pi)``, the one less beyond the limits."""
    first = quat_to_xyz(q)
    a, b, c = first.unbind(-1)
    second = _wrap(torch.stack([a + math.pi, math.pi - b, c + math.pi], -1))
    lo, hi = lower[..., ix(_SPHERICAL_DOF, lower)], upper[..., ix(_SPHERICAL_DOF, upper)]
    take = _limit_excess(second, lo, hi) < _limit_excess(first, lo, hi) - 1e-6
    return torch.where(take[..., None], second, first).flatten(-2)


def hinges_from_quats(jq: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                      dof: torch.Tensor | None = None) -> torch.Tensor:
    """(..., 12, 4) joint rotations -> (..., 28) MuJoCo hinge angles (`lower`, `upper`: (28,) joint
    limits; see :func:`_nearer_triple`). A 1-DoF joint is NEAR's angle about y. `dof`: the
    rotations' :func:`dof_from_quats` where the caller has it already."""
    # the 1-DoF joints are already MuJoCo's hinge angles
    out = dof_from_quats(jq) if dof is None else dof.clone()
    out[..., ix(_SPH_FLAT, out)] = _nearer_triple(jq[..., ix(_SPHERICAL, jq), :], lower, upper)
    return out


def quats_from_hinges(hinges: torch.Tensor) -> torch.Tensor:
    """(..., 28) MuJoCo hinge angles -> (..., 12, 4) joint rotations."""
    out = torch.empty(hinges.shape[:-1] + (len(DOF_OFFSETS) - 1, 4), dtype=hinges.dtype, device=hinges.device)
    out[..., ix(_SPHERICAL, out), :] = xyz_to_quat(hinges[..., ix(_SPHERICAL_DOF, hinges)])
    out[..., ix(_HINGE_JOINT, out), :] = axis_angle_quat(1, hinges[..., ix(_HINGE_DOF, hinges)])
    return out


def hinge_targets(dof_targets: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """NEAR's PD targets (..., 28) -> MuJoCo's: each 3-DoF target rotation (an exp map) as the hinge
    triple nearer the limits; a 1-DoF target as it is (it may lie beyond +-pi)."""
    out = dof_targets.clone()
    targets = exp_map_to_quat(dof_targets[..., ix(_SPHERICAL_DOF, dof_targets)])
    out[..., ix(_SPH_FLAT, out)] = _nearer_triple(targets, lower, upper)
    return out


def _xyz_rate_matrix(hinges: torch.Tensor) -> torch.Tensor:
    """(..., 8, 3) x-y-z hinge angles -> (..., 8, 3, 3) J with local angular velocity = J @ rates."""
    b, c = hinges[..., 1], hinges[..., 2]
    cb, sb, cc, sc = torch.cos(b), torch.sin(b), torch.cos(c), torch.sin(c)
    zero, one = torch.zeros_like(b), torch.ones_like(b)
    return torch.stack([torch.stack([cc * cb, sc, zero], -1),
                        torch.stack([-sc * cb, cc, zero], -1),
                        torch.stack([sb, zero, one], -1)], -2)


def dof_velocity(hinges: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """MuJoCo hinge angles and rates (..., 28) -> NEAR's dof velocity (..., 28): the 3-DoF joints'
    local angular velocity, the 1-DoF joints' rate."""
    out = rates.clone()
    jac = _xyz_rate_matrix(hinges[..., ix(_SPHERICAL_DOF, hinges)])
    out[..., ix(_SPH_FLAT, out)] = (jac @ rates[..., ix(_SPHERICAL_DOF, rates), None]).squeeze(-1).flatten(-2)
    return out


def hinge_rates(hinges: torch.Tensor, dof_vel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dof_velocity`: the hinge rates that give NEAR's dof velocity (at
    ``cos b = 0``, where x and z turn about the same axis, the rates are kept finite)."""
    out = dof_vel.clone()
    h, w = hinges[..., ix(_SPHERICAL_DOF, hinges)], dof_vel[..., ix(_SPHERICAL_DOF, dof_vel)]
    b, c = h[..., 1], h[..., 2]
    cb, sb, cc, sc = torch.cos(b), torch.sin(b), torch.cos(c), torch.sin(c)
    cb = torch.where(cb >= 0, cb.clamp_min(1e-3), cb.clamp_max(-1e-3))
    da = (cc * w[..., 0] - sc * w[..., 1]) / cb
    db = sc * w[..., 0] + cc * w[..., 1]
    dc = w[..., 2] - da * sb
    out[..., ix(_SPH_FLAT, out)] = torch.stack([da, db, dc], -1).flatten(-2)
    return out


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
    """(..., 28) NEAR's dof -> (..., 52): tan-norm of each 3-DoF joint's rotation (from its exp map),
    the 1-DoF angles as they are (NEAR's ``dof_to_obs``, all joints in one batched call)."""
    sph = quat_to_tan_norm(exp_map_to_quat(dof_pos[..., ix(_SPHERICAL_DOF, dof_pos)]))    # (..., 8, 6)
    out = torch.empty(dof_pos.shape[:-1] + (52,), dtype=dof_pos.dtype, device=dof_pos.device)
    out[..., ix(_SPH_OUT, out)] = sph.flatten(-2)
    out[..., ix(_HINGE_OUT, out)] = dof_pos[..., ix(_HINGE_DOF, dof_pos)]
    return out


def humanoid_obs(root_pos: torch.Tensor, root_rot: torch.Tensor, root_vel: torch.Tensor, root_ang_vel: torch.Tensor,
                 dof_pos: torch.Tensor, dof_vel: torch.Tensor, key_pos: torch.Tensor,
                 local_root_obs: bool = False) -> torch.Tensor:
    """NEAR's 105-dim AMP observation of one state (root velocities in the world frame; dof
    position and velocity in NEAR's coordinates).

    root height (1), root rotation tan-norm (6; heading-relative if `local_root_obs`), heading-local
    root linear and angular velocity (3 + 3), :func:`dof_obs` (52), dof velocities (28), the key
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


def forward_kinematics(local_rot: torch.Tensor, root_pos: torch.Tensor,
                       local_translation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global body positions and rotations (..., 15, 3 / 4) of a pose given by local rotations."""
    pos, rot = [root_pos], [local_rot[..., 0, :]]
    for j in range(1, len(PARENTS)):
        p = PARENTS[j]
        pos.append(pos[p] + quat_rotate(rot[p], local_translation[j].expand_as(root_pos)))
        rot.append(quat_mul(rot[p], local_rot[..., j, :]))
    return torch.stack(pos, -2), torch.stack(rot, -2)
