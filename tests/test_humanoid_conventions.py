"""The humanoid follows NEAR's conventions: its coordinates, velocities, character and rates.

Each test checks against values computed here by other means (rotation matrices, known rotations,
volumes and densities); NEAR's own files are used only where a checkout is at /tmp/near-src.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from near.training.envs.humanoid import motion_lib, skeleton as sk
from near.training.envs.humanoid.backends import load_model
from near.training.envs.humanoid.env import CONTROL_DT, PHYSICS_STEPS, HumanoidEnv, HumanoidEnvConfig

NEAR_SRC = "/tmp/near-src"
NEAR_XML = os.path.join(NEAR_SRC, "assets/mjcf/amp_humanoid.xml")
NEAR_DATA = os.path.join(NEAR_SRC, "isaacgymenvs/custom_envs/data/humanoid")
needs_near = pytest.mark.skipif(not os.path.isdir(NEAR_SRC), reason="no NEAR checkout at /tmp/near-src")


def _matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix (independent of the quaternion code under test)."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _quat_matrix(q: torch.Tensor) -> np.ndarray:
    x, y, z, w = q.double().tolist()
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _axis_quat(axis, angle) -> torch.Tensor:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return torch.tensor([*(axis * math.sin(angle / 2)), math.cos(angle / 2)], dtype=torch.float64)


# ------------------------------------------------------------------ coordinates
def test_three_dof_joints_are_exponential_maps_as_near_computes_them():
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    q = _axis_quat(axis, 0.7)
    assert torch.allclose(sk.quat_to_exp_map(q), torch.as_tensor(0.7 * axis), atol=1e-9)
    assert torch.allclose(sk.quat_to_exp_map(-q), torch.as_tensor(0.7 * axis), atol=1e-9)  # either sign
    # a turn of 1.5 pi about z is -0.5 pi about z (angles wrapped onto (-pi, pi])
    assert torch.allclose(sk.quat_to_exp_map(_axis_quat([0, 0, 1], 1.5 * math.pi)),
                          torch.tensor([0, 0, -0.5 * math.pi], dtype=torch.float64), atol=1e-9)
    assert torch.equal(sk.quat_to_exp_map(torch.tensor([0.0, 0, 0, 1])), torch.zeros(3))
    e = torch.tensor([0.3, -1.1, 2.0], dtype=torch.float64)
    angle = float(e.norm())
    assert np.allclose(_quat_matrix(sk.exp_map_to_quat(e)), _matrix(e.numpy(), angle), atol=1e-12)
    # the observation of a joint is the tan-norm of that rotation: its x and z axes
    obs = sk.dof_obs(torch.cat([e, torch.zeros(25, dtype=torch.float64)]))
    rot = _matrix(e.numpy(), angle)
    assert np.allclose(obs[:6].numpy(), np.concatenate([rot[:, 0], rot[:, 2]]), atol=1e-12)


def test_hinge_triples_reproduce_the_rotation_and_pick_the_branch_within_the_limits():
    lim = torch.as_tensor(load_model().jnt_range[1:], dtype=torch.float64)
    # the right hip at hinges (-10, -100, 20) degrees, within its limits; the rotation's other triple,
    # the one with |b| <= 90 degrees, is (170, -80, -160): far beyond them
    want = [math.radians(v) for v in (-10, -100, 20)]
    rot = (_matrix(np.array([1.0, 0, 0]), want[0]) @ _matrix(np.array([0.0, 1, 0]), want[1])
           @ _matrix(np.array([0.0, 0, 1]), want[2]))
    w = math.sqrt(max(0.0, 1 + np.trace(rot))) / 2
    q = torch.tensor([(rot[2, 1] - rot[1, 2]) / (4 * w), (rot[0, 2] - rot[2, 0]) / (4 * w),
                      (rot[1, 0] - rot[0, 1]) / (4 * w), w], dtype=torch.float64)
    jq = torch.zeros(12, 4, dtype=torch.float64)
    jq[:, 3] = 1.0
    jq[6] = q  # DOF_BODY_IDS[6] is the right thigh
    hinges = sk.hinges_from_quats(jq, lim[:, 0], lim[:, 1])
    assert np.allclose(hinges[14:17].numpy(), want, atol=1e-9)
    # and back: MuJoCo's hinges give NEAR's exp map of the same rotation
    assert torch.allclose(sk.dof_from_quats(sk.quats_from_hinges(hinges))[14:17], sk.quat_to_exp_map(q), atol=1e-9)
    # a NEAR PD target (exp map) becomes the hinge triple of the same rotation
    target = torch.zeros(28, dtype=torch.float64)
    target[14:17] = sk.quat_to_exp_map(q)
    target[17] = math.radians(190)  # a knee target beyond pi stays as it is
    out = sk.hinge_targets(target, lim[:, 0], lim[:, 1])
    assert torch.allclose(out[14:17], hinges[14:17], atol=1e-9) and float(out[17]) == pytest.approx(math.radians(190))


def test_near_velocity_of_local_rotations_and_its_hinge_rates():
    # a joint spinning at 2 rad/s about a fixed local axis: NEAR's velocity is 2 x that axis
    axis = np.array([0.0, 0.6, 0.8])
    q0 = _axis_quat([1, 0, 0], 0.4)
    q1 = sk.quat_mul(q0, _axis_quat(axis, 2.0 * 0.01))
    assert torch.allclose(sk.local_angular_velocity(q0, q1, 0.01), torch.as_tensor(2.0 * axis), atol=1e-9)
    # NEAR's quirk: a difference quaternion with w < 0 keeps its vector part's direction
    assert torch.allclose(sk.local_angular_velocity(q0, -q1, 0.01), torch.as_tensor(-2.0 * axis), atol=1e-9)
    # hinge rates -> NEAR's velocity agrees with finite differences of rotation matrices
    gen = torch.Generator().manual_seed(0)
    hinges = (torch.rand(28, generator=gen, dtype=torch.float64) - 0.5) * 2.0
    rates = torch.randn(28, generator=gen, dtype=torch.float64)
    vel = sk.dof_velocity(hinges, rates)
    eps = 1e-6

    def hip(h):
        return (_matrix(np.array([1.0, 0, 0]), float(h[14])) @ _matrix(np.array([0.0, 1, 0]), float(h[15]))
                @ _matrix(np.array([0.0, 0, 1]), float(h[16])))

    r0, r1 = hip(hinges), hip(hinges + eps * rates)
    skew = r0.T @ (r1 - r0) / eps  # R^T dR/dt = [w]x in the child's frame
    assert np.allclose([skew[2, 1], skew[0, 2], skew[1, 0]], vel[14:17].numpy(), atol=1e-5)
    assert float(vel[17]) == pytest.approx(float(rates[17]))  # a knee's rate is its velocity
    assert torch.allclose(sk.hinge_rates(hinges, vel), rates, atol=1e-9)


def _clip(path, fps: float, axis, rate: float, start) -> dict:
    """A poselib-style motion dict: the right thigh turns at `rate` about `axis` from `start`."""
    t = np.arange(12) / fps
    rot = np.zeros((12, 15, 4))
    rot[..., 3] = 1.0
    for i, ti in enumerate(t):
        q = sk.quat_mul(start, _axis_quat(axis, rate * ti))
        rot[i, 9] = q.numpy()
    local_t = load_model().body_pos[1:].copy()
    local_t[0] = 0.0
    root = np.tile([0.0, 0.0, 0.95], (12, 1))
    return {"rotation": {"arr": rot.astype(np.float32)}, "root_translation": {"arr": root.astype(np.float32)},
            "global_velocity": {"arr": np.zeros((12, 15, 3), np.float32)},
            "global_angular_velocity": {"arr": np.zeros((12, 15, 3), np.float32)},
            "skeleton_tree": {"node_names": list(sk.BODY_NAMES), "parent_indices": {"arr": np.array(sk.PARENTS)},
                              "local_translation": {"arr": local_t.astype(np.float32)}},
            "is_local": True, "fps": fps}


def test_motion_files_give_near_dof_and_frame_to_frame_velocities(tmp_path):
    axis, rate = np.array([0.6, 0.0, 0.8]), 1.5
    start = _axis_quat([0, 1, 0], -0.9)
    np.save(tmp_path / "spin.npy", _clip(tmp_path, 20.0, axis, rate, start), allow_pickle=True)
    m = motion_lib.load_motions(str(tmp_path / "spin.npy"))[0]
    for i in (0, 5, 11):
        q = sk.quat_mul(start, _axis_quat(axis, rate * i / 20.0))
        assert torch.allclose(m.dof_pos[i, 14:17].double(), sk.quat_to_exp_map(q), atol=1e-5)
    # each frame's velocity is towards the next; the last repeats the one before
    assert torch.allclose(m.dof_vel[:, 14:17].double(), torch.as_tensor(rate * axis).expand(12, 3), atol=1e-3)
    # a reference state between frames: rotation slerped, velocity of the frame before
    table = motion_lib.MotionTable([m], torch.device("cpu"))
    s = table.state(torch.tensor([0]), torch.tensor([2.5 / 20.0]))
    q = sk.quat_mul(start, _axis_quat(axis, rate * 2.5 / 20.0))
    assert torch.allclose(s["dof_pos"][0, 14:17].double(), sk.quat_to_exp_map(q), atol=1e-5)
    assert torch.equal(s["dof_vel"][0], m.dof_vel[2])


def test_an_env_reset_puts_the_reference_rotation_and_velocity_into_the_simulator(tmp_path):
    axis, rate = np.array([0.0, 1.0, 0.0]), -2.0
    np.save(tmp_path / "swing.npy", _clip(tmp_path, 30.0, axis, rate, _axis_quat([1, 0, 0], -0.2)), allow_pickle=True)
    env = HumanoidEnv(HumanoidEnvConfig(num_envs=3, motion_file=str(tmp_path / "swing.npy"), episode_length=8), seed=0)
    qpos, qvel, _, _ = env.sim.read()
    s = env.table.state(env.motion_id, env.start_time)
    sim_dof = sk.dof_from_quats(sk.quats_from_hinges(qpos[:, 7:].double()))
    assert torch.allclose(sim_dof[:, 14:17], s["dof_pos"][:, 14:17].double(), atol=1e-5)
    near_vel = sk.dof_velocity(qpos[:, 7:].double(), qvel[:, 6:].double())
    assert torch.allclose(near_vel[:, 14:17], torch.as_tensor(rate * axis).expand(3, 3), atol=1e-3)
    # the observation read back from the simulator is the reference's (dof and velocity parts)
    physics, _, _ = env._sim_state()
    assert torch.allclose(physics[:, 13:93], env.obs[:, 13:93], atol=1e-3)


# ------------------------------------------------------------------ the character and its rates
def _geom_volume(model, g: int) -> float:
    import mujoco

    size = model.geom_size[g]
    kind = model.geom_type[g]
    if kind == mujoco.mjtGeom.mjGEOM_SPHERE:
        return 4 / 3 * math.pi * size[0] ** 3
    if kind == mujoco.mjtGeom.mjGEOM_CAPSULE:
        return math.pi * size[0] ** 2 * 2 * size[1] + 4 / 3 * math.pi * size[0] ** 3
    if kind == mujoco.mjtGeom.mjGEOM_BOX:
        return 8 * size[0] * size[1] * size[2]
    raise AssertionError(f"unexpected geom type {kind}")


def test_the_character_is_nears_in_mujoco_terms():
    model = load_model()
    # NEAR's densities (kg/m^3) per geom, and the volumes of its spheres, capsules and boxes
    density = {"pelvis": 2226, "upper_waist": 2226, "torso": 1794, "right_clavicle": 1100, "left_clavicle": 1100,
               "head": 1081, "right_upper_arm": 982, "left_upper_arm": 982, "right_lower_arm": 1056,
               "left_lower_arm": 1056, "right_hand": 1865, "left_hand": 1865, "right_thigh": 1269, "left_thigh": 1269,
               "right_shin": 1014, "left_shin": 1014, "right_foot": 1141, "left_foot": 1141}
    assert model.ngeom == 19 and model.nbody == 16 and model.nu == 28
    mass = sum(_geom_volume(model, model.geom(n).id) * d for n, d in density.items())
    assert float(model.body_mass[1:].sum()) == pytest.approx(mass, rel=1e-9)
    assert mass == pytest.approx(48.89, abs=0.01)
    # PD servos: kp = NEAR's joint stiffness, kv = damping, no torque limit (NEAR sets no drive effort)
    gains = {"abdomen": (600, 60, 0.025), "neck": (50, 5, 0.017), "shoulder": (200, 20, 0.02),
             "elbow": (150, 15, 0.015), "hip": (300, 30, 0.02), "knee": (300, 30, 0.02),
             "ankle": (200, 20, 0.01)}
    for k in range(28):
        joint = model.joint(k + 1).name
        kp, kv, armature = next(v for g, v in gains.items() if g in joint)
        assert model.actuator_trnid[k, 0] == k + 1, "actuator k drives hinge k (NEAR's action order)"
        assert model.actuator_gainprm[k, 0] == kp and model.actuator_biasprm[k, 1] == -kp
        assert model.actuator_biasprm[k, 2] == -kv and not model.actuator_forcelimited[k]
        assert model.dof_armature[k + 6] == pytest.approx(armature)
        assert model.dof_damping[k + 6] == 0 and model.jnt_stiffness[k + 1] == 0
    # self-collision: every body geom can touch every other body's (but the parent's)
    body_geoms = range(1, model.ngeom)
    assert all(model.geom_contype[g] & model.geom_conaffinity[h] for g in body_geoms for h in body_geoms)
    # NEAR's rates: sim dt 0.0166 s with 2 substeps; 2 sim steps per action
    assert model.opt.timestep == pytest.approx(0.0166 / 2)
    assert CONTROL_DT == pytest.approx(2 * 0.0166) and PHYSICS_STEPS * model.opt.timestep == pytest.approx(CONTROL_DT)


@needs_near
def test_the_model_matches_nears_own_file_loaded_in_mujoco():
    import mujoco

    with open(NEAR_XML) as fh:  # its floor names a material the file leaves to its includer
        near = mujoco.MjModel.from_xml_string(fh.read().replace('material="grid"', ""))
    ours = load_model()
    assert [near.body(i).name for i in range(near.nbody)] == [ours.body(i).name for i in range(ours.nbody)]
    assert np.allclose(near.body_mass, ours.body_mass, rtol=1e-9)
    assert np.allclose(near.body_inertia, ours.body_inertia, rtol=1e-9)
    assert np.allclose(near.body_pos[2:], ours.body_pos[2:])
    assert np.allclose(near.jnt_range, ours.jnt_range) and np.allclose(near.jnt_axis, ours.jnt_axis)
    assert np.allclose(near.dof_armature, ours.dof_armature)
    for k in range(ours.nu):
        j = ours.actuator_trnid[k, 0]
        assert not ours.actuator_forcelimited[k]
        assert ours.actuator_gainprm[k, 0] == near.jnt_stiffness[j]
        assert -ours.actuator_biasprm[k, 2] == near.dof_damping[j + 5]


@needs_near
def test_nears_crane_pose_stays_within_the_limits_in_nears_coordinates():
    lim = torch.as_tensor(load_model().jnt_range[1:], dtype=torch.float32)
    for m in motion_lib.load_motions(os.path.join(NEAR_DATA, "amp_humanoid_crane_pose.yaml")):
        excess = ((lim[:, 0] - m.dof_pos).clamp_min(0) + (m.dof_pos - lim[:, 1]).clamp_min(0)).max()
        assert math.degrees(float(excess)) < 9.0, m.name
        hinges = sk.hinges_from_quats(m.joint_rot, lim[:, 0], lim[:, 1])
        assert torch.allclose(sk.dof_from_quats(sk.quats_from_hinges(hinges)), m.dof_pos, atol=2e-3)


def test_motion_files_are_found_in_a_near_checkout_named_by_near_motion_dir(tmp_path, monkeypatch):
    data = tmp_path / "near" / motion_lib.NEAR_DATA
    (data / "clips").mkdir(parents=True)
    np.save(data / "clips" / "spin.npy", _clip(tmp_path, 30.0, np.array([0.0, 1, 0]), 1.0, _axis_quat([1, 0, 0], 0.0)),
            allow_pickle=True)
    (data / "amp_humanoid_spin.yaml").write_text("motions:\n- file: clips/spin.npy\n  weight: 1.0\n")
    monkeypatch.delenv("NEAR_MOTION_DIR", raising=False)
    with pytest.raises(Exception, match="amp_humanoid_spin.yaml.*not found"):
        motion_lib.load_motions("amp_humanoid_spin.yaml")
    monkeypatch.setenv("NEAR_MOTION_DIR", str(tmp_path / "near"))          # the checkout's root
    assert motion_lib.load_motions("amp_humanoid_spin.yaml")[0].name == "spin"
    monkeypatch.setenv("NEAR_MOTION_DIR", str(data))                        # or its data folder
    assert motion_lib.load_motions("amp_humanoid_spin.yaml")[0].num_frames == 12
    assert motion_lib.load_motions(str(data / "amp_humanoid_spin.yaml"))[0].fps == 30.0  # an absolute path


# ------------------------------------------------------------------ early termination
def test_early_termination_is_nears_rule():
    """NEAR ends an episode when any body but the feet is in contact and any such body is low: not
    necessarily the same body, never in the first two steps, feet never count."""
    from near.training.envs.humanoid.env import fallen

    hand, head, foot = (sk.BODY_NAMES.index(b) for b in ("right_hand", "head", "right_foot"))
    may_touch = torch.tensor([b in ("right_foot", "left_foot") for b in sk.BODY_NAMES])
    n = len(sk.BODY_NAMES)
    touch, height = torch.zeros(5, n, dtype=torch.bool), torch.ones(5, n)
    touch[0, hand], height[0, head] = True, 0.2        # hand touches, head low: two bodies, NEAR ends it
    touch[1, foot], height[1, foot] = True, 0.05       # only a foot: walking
    touch[2, hand] = True                              # contact, nothing low
    height[3, head] = 0.2                              # low, no contact
    touch[4, hand], height[4, hand] = True, 0.1        # the same body, but in the first steps
    progress = torch.tensor([5, 5, 5, 5, 1])
    assert fallen(touch, height, may_touch, 0.3, progress).tolist() == [True, False, False, False, False]
    assert fallen(touch, height, may_touch, 0.3, torch.full((5,), 2)).tolist() == [True, False, False, False, True]


def _crossed_legs_qpos(model) -> np.ndarray:
    """Standing 1.5 m up with both hips rotated inwards to their limits: thighs and shins overlap."""
    qpos = np.zeros(model.nq)
    qpos[2], qpos[3] = 1.5, 1.0
    for name, end in (("right_hip_x", 1), ("left_hip_x", 0)):
        j = model.joint(name).id
        qpos[model.jnt_qposadr[j]] = model.jnt_range[j][end]
    return qpos


@pytest.mark.parametrize("backend", ["mujoco", "mujoco_warp"])
def test_both_bodies_of_a_self_contact_are_in_contact(backend):
    """NEAR's rule reads each body's contact force, so a self-contact counts for both bodies."""
    from near.training.envs.humanoid.backends import BACKENDS

    if backend == "mujoco_warp" and not os.environ.get("NEAR_REQUIRE_WARP"):
        pytest.importorskip("mujoco_warp")
    model = load_model()
    sim = BACKENDS[backend](2, torch.device("cpu"))
    qpos = torch.as_tensor(np.stack([_crossed_legs_qpos(model), _crossed_legs_qpos(model)]))
    qpos[1, 7:] = 0.0  # the second world stands straight, in the air: no contact at all
    sim.set_state(torch.ones(2, dtype=torch.bool), qpos, torch.zeros(2, model.nv, dtype=torch.float64))
    sim.step(torch.zeros(2, model.nu), 1)
    touching = {sk.BODY_NAMES[b] for b in sim.read()[3][0].nonzero().flatten().tolist()}
    assert {"right_thigh", "left_thigh", "right_shin", "left_shin"} <= touching
    assert not bool(sim.read()[3][1].any())
