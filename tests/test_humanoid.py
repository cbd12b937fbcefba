"""The MuJoCo humanoid: motion files, observation, metrics, and every algorithm training on it (CPU).

Training runs call ``near.cli.main`` in this process (the console script's code path) with tiny
budgets: 4 envs, 8-step episodes, a 32x32 policy.
"""

from __future__ import annotations

import math
import os
import re

# MuJoCo picks its OpenGL backend when first imported (the render test): EGL works headless
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from near.errors import ConfigError  # noqa: E402

from _training_helpers import run_cli, scalars  # noqa: E402
from near.training.envs.humanoid import motion_lib, skeleton as sk, synthetic  # noqa: E402
from near.training.envs.humanoid.backends import load_model  # noqa: E402
from near.training.envs.humanoid.env import HumanoidEnv, HumanoidEnvConfig  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["num_envs=4", "torch_threads=1", "++task.env.episodeLength=8", "++train.params.network.mlp.units=[32,32]",
        "++train.params.config.horizon_length=8", "++train.params.config.save_frequency=1",
        "++train.params.config.print_stats=False"]
NEAR_TAGS = {"mean_dtw_pose_error/step", "spectral_arc_length/step", "root_body_velocity/step",
             "root_body_acceleration/step", "root_body_jerk/step"}
OWN_TAGS = {"dtw_error/step", "sparc/step", "root_velocity/step", "root_jerk/step", "episode_lengths/step"}


@pytest.fixture(scope="module")
def motion_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("motions")
    for name in synthetic.MOTIONS:
        synthetic.write(name, out)
    return str(out)




# ------------------------------------------------------------------ motion files
def test_generated_files_load_through_neares_yaml_format_and_recover_the_keyframes(motion_dir):
    motions = motion_lib.load_motions(os.path.join(motion_dir, "amp_humanoid_walk.yaml"))
    assert len(motions) == 1 and motions[0].num_frames == 301 and motions[0].fps == 30
    t = np.arange(301) / 30
    dof, speed = synthetic._walk(t)
    lim = torch.as_tensor(load_model().jnt_range[1:], dtype=torch.float32)
    hinges = sk.hinges_from_quats(motions[0].joint_rot, lim[:, 0], lim[:, 1])
    assert torch.allclose(hinges, torch.as_tensor(dof, dtype=torch.float32), atol=1e-5)
    assert abs(float(motions[0].root_vel[150, 0]) - speed) < 1e-3        # forward at the walk's speed
    feet_z = motions[0].body_pos[:, list(sk.FOOT_IDS), 2].min(1).values
    assert float(feet_z.max()) < 0.1                                     # a foot is on the floor in every frame


def test_bad_motion_files_are_clear_errors(motion_dir, tmp_path):
    good = np.load(os.path.join(motion_dir, "amp_humanoid_run.npy"), allow_pickle=True).item()
    wrong_names = dict(good, skeleton_tree=dict(good["skeleton_tree"], node_names=["hips", *sk.BODY_NAMES[1:]]))
    np.save(tmp_path / "names.npy", wrong_names, allow_pickle=True)
    with pytest.raises(ConfigError, match=r"names.npy.*\['hips'.*does not match.*'pelvis'"):
        motion_lib.load_motions(str(tmp_path / "names.npy"))
    wrong_shape = dict(good, rotation={"arr": good["rotation"]["arr"][:, :14], "context": {"dtype": "float32"}})
    np.save(tmp_path / "shape.npy", wrong_shape, allow_pickle=True)
    with pytest.raises(ConfigError, match=r"shape.npy.*\(T, 15, 4\)"):
        motion_lib.load_motions(str(tmp_path / "shape.npy"))
    (tmp_path / "list.yaml").write_text("motions:\n- file: gone.npy\n  weight: 1.0\n")
    gone = r"list.yaml: motions\[0\] names 'gone.npy', not found \(looked for .*gone.npy\)"
    with pytest.raises(ConfigError, match=gone):
        motion_lib.load_motions(str(tmp_path / "list.yaml"))
    with pytest.raises(ConfigError, match=gone):  # what a run records, read before the clips load
        motion_lib.motion_sources(str(tmp_path / "list.yaml"))
    with pytest.raises(ConfigError, match=r"amp_humanoid_tai_chi.yaml.*not found"):
        motion_lib.load_motions("amp_humanoid_tai_chi.yaml")


# ------------------------------------------------------------------ observation and metrics
def test_rotation_helpers_on_known_answers():
    assert torch.allclose(sk.quat_to_tan_norm(torch.tensor([0.0, 0.0, 0.0, 1.0])), torch.tensor([1.0, 0, 0, 0, 0, 1]))
    yaw = sk.axis_angle_quat(2, torch.tensor(math.pi / 2))  # x axis -> y axis
    assert torch.allclose(sk.quat_rotate(yaw, torch.tensor([1.0, 0, 0])), torch.tensor([0.0, 1, 0]), atol=1e-6)
    assert torch.allclose(sk.quat_rotate(sk.heading_inv(yaw), torch.tensor([0.0, 1, 0])), torch.tensor([1.0, 0, 0]), atol=1e-6)
    angles = torch.tensor([[0.3, -0.7, 1.1], [-1.2, 0.4, -0.2]])
    assert torch.allclose(sk.quat_to_xyz(sk.xyz_to_quat(angles)), angles, atol=1e-5)


def test_observation_matches_the_reference_at_reset_and_masks_split_the_features(motion_dir):
    env = HumanoidEnv(HumanoidEnvConfig(num_envs=6, motion_file=os.path.join(motion_dir, "amp_humanoid_run.npy"),
                                        episode_length=10), seed=3)
    assert env.obs_dim == 105 and env.paired_obs_dim == 210 and env.action_dim == 28
    ref = env.reference_obs(env.motion_id, env.start_time)
    assert torch.allclose(ref, env.obs)
    # the simulator starts in that state (RSI): the observation of its own forward kinematics agrees
    # (key bodies differ by the interpolation between frames, millimetres)
    physics, _, _ = env._sim_state()
    assert float((physics - env.obs).abs().max()) < 1e-2
    stand = HumanoidEnv(HumanoidEnvConfig(num_envs=2, motion_file="walk", state_init="Default"), seed=0)
    assert float((stand._sim_state()[0] - stand.obs).abs().max()) < 1e-5
    assert torch.equal(stand.history[:, 0], stand.obs)
    demo = env.demo_transitions()
    assert demo.shape[1] == 210 and torch.isfinite(demo).all()
    upper, lower = env.feature_mask("upper_body"), env.feature_mask("lower_body")
    assert bool((upper ^ lower).all()) and 0 < int(upper.sum()) < 210


def test_episode_metrics_score_zero_pose_error_on_the_reference_itself(motion_dir):
    env = HumanoidEnv(HumanoidEnvConfig(num_envs=2, motion_file=os.path.join(motion_dir, "amp_humanoid_crane_pose.npy"),
                                        episode_length=6, enable_early_termination=False), seed=0)
    # replay the reference's own body positions as the agent's: both DTW errors must be 0
    steps = env.ref_pose.shape[1]
    path = env.ref_pose.clone()
    from near import metrics

    acc, length = metrics.dtw_start(2, steps)
    sq, _ = metrics.dtw_start(2, steps)
    for i in range(steps):
        d = (path[:, i:i + 1].double() - env.ref_pose.double()).norm(dim=-1)
        acc, new_len = metrics.dtw_step(acc, length, d)
        sq = metrics.dtw_cost_step(sq, d.square())
        length = new_len
    assert float(acc[:, -1].abs().max()) < 1e-6 and float(sq[:, -1].abs().max()) < 1e-9
    # a real rollout: every metric under both names, finite, non-negative errors
    obs, done = env.reset(), torch.zeros(2, dtype=torch.bool)
    for _ in range(6):
        obs, _, done, infos = env.step(torch.zeros(2, 28))
    # the metrics of episodes ending at a step come with the next step, or by a flush after the last
    assert bool(done.all()) and "episode_metrics" not in infos
    m, ended = env.flush_episode_metrics()
    assert bool(ended.all()) and env.flush_episode_metrics() is None
    for key in ("mean_dtw_pose_error", "dtw_error", "spectral_arc_length", "sparc", "root_body_jerk", "root_jerk"):
        assert torch.isfinite(m[key]).all(), key
    assert float(m["dtw_error"].min()) > 0 and torch.equal(m["root_jerk"], m["root_body_jerk"])


def test_uniform_random_actions_keep_the_simulation_stable():
    """The random-policy baseline drives every PD target across its whole range 30 times a
    second; the model must stay stable under it (it did not with the implicitfast integrator)."""
    import mujoco

    env = HumanoidEnv(HumanoidEnvConfig(num_envs=4, motion_file="walk", enable_early_termination=False), seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(120):
        env.step(torch.rand(4, 28, generator=gen) * 2 - 1)
    unstable = [d.warning[mujoco.mjtWarning.mjWARN_BADQACC].number for d in env.sim.datas]
    assert unstable == [0, 0, 0, 0]
    assert float(env.sim.read()[1].abs().max()) < 1e3


def test_a_diverged_world_ends_its_episode_with_nan_metrics_and_restarts():
    env = HumanoidEnv(HumanoidEnvConfig(num_envs=3, motion_file="walk"), seed=0)
    env.step(torch.zeros(3, 28))
    env.sim.datas[1].qvel[:] = float("nan")  # what a blown-up world looks like
    obs, reward, done, infos = env.step(torch.zeros(3, 28))
    assert done.tolist() == [False, True, False] and bool(infos["terminate"][1])
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
    obs, _, done, infos = env.step(torch.zeros(3, 28))
    assert infos["episode_ended"].tolist() == [False, True, False]
    assert torch.isnan(infos["episode_metrics"]["mean_dtw_pose_error"][1])
    assert torch.isfinite(obs).all() and not bool(done.any()) and not bool(env.diverged.any())


# ------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def ncsn_dir(tmp_path_factory) -> str:
    from near.cli import main

    run_dir = str(tmp_path_factory.mktemp("ncsn_humanoid"))
    assert main(["train", "ncsn", "task=HumanoidNEAR", f"run_dir={run_dir}", "torch_threads=1",
                 "++train.params.config.near_config.training.n_iters=10",
                 "++train.params.config.near_config.training.snapshot_freq=5",
                 "++train.params.config.near_config.training.eval_freq=5"]) == 0
    return run_dir


NC = "++train.params.config.near_config.inference"
CASES = {
    "HumanoidAMP": (["++train.params.config.amp_batch_size=32", "++train.params.config.amp_minibatch_size=16"],
                    {"losses/disc_loss", "minibatch_disc_reward/step"}),
    "HumanoidTrack": (["++task.env.motion_file=crane_pose"], {"minibatch_tracking_reward/step", "info/tracking_error_pose"}),
    "Humanoid": (["++task.env.motion_file=run"], {"rewards/step"}),
    "HumanoidNEAR": ([], {"minibatch_energy/step", "ncsn_perturbation_level/step"}),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_every_algorithm_trains_logs_both_tag_sets_and_resumes(task, tmp_path, request, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    extra, tags = CASES[task]
    if task == "HumanoidNEAR":
        ncsn = request.getfixturevalue("ncsn_dir")
        extra = [f"{NC}.eb_model_checkpoint={ncsn}/nn/checkpoint.pth",
                 f"{NC}.running_mean_std_checkpoint={ncsn}/nn/running_mean_std.pth"]
    run_dir = str(tmp_path / task)
    args = ["train", "rl", f"task={task}", f"run_dir={run_dir}", *TINY, *extra]
    run_cli(args + ["max_iterations=2"], capsys)
    first = scalars(run_dir)
    missing = (tags | NEAR_TAGS | OWN_TAGS) - set(first)
    assert not missing, f"{task}: tags not logged: {sorted(missing)}"
    assert "resumed from" in run_cli(args + ["max_iterations=3"], capsys)
    second = scalars(run_dir)
    assert [s for s, _ in second["losses/a_loss"]] == sorted({s for s, _ in second["losses/a_loss"]})
    assert second["losses/a_loss"][:2] == first["losses/a_loss"]


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    base = ["train", "rl", "task=Humanoid", *TINY, "++task.env.motion_file=walk"]
    run_cli(base + [f"run_dir={tmp_path}/straight", "max_iterations=4"], capsys)
    run_cli(base + [f"run_dir={tmp_path}/split", "max_iterations=2"], capsys)
    run_cli(base + [f"run_dir={tmp_path}/split", "max_iterations=4"], capsys)
    straight, split = scalars(f"{tmp_path}/straight"), scalars(f"{tmp_path}/split")
    for tag in ("losses/a_loss", "losses/c_loss", "rewards/step"):
        assert straight[tag] == split[tag], tag


def test_isaacgym_backend_is_still_a_clear_error(tmp_path, capsys):
    from near.cli import main

    code = main(["train", "rl", "task=HumanoidAMP", "++task.sim.backend=isaacgym", f"run_dir={tmp_path}/x"])
    err = capsys.readouterr().err
    assert code == 2 and "Isaac Gym" in err and "task.sim.backend=mujoco" in err  # and what runs instead


def test_warp_backend_matches_mujoco(motion_dir):
    """MuJoCo Warp (here on Warp's CPU device; CUDA on a GPU) steps the same model as MuJoCo."""
    if not os.environ.get("NEAR_REQUIRE_WARP"):  # `make setup` installs it; a bare venv may not
        pytest.importorskip("mujoco_warp")
    motion = os.path.join(motion_dir, "amp_humanoid_walk.npy")
    # seed 0 starts both envs in reference states where the two agree; from some others (seed 1:
    # t = 4.03 s and 7.35 s of this walk) they part by up to 0.8 rad/s within one control step
    cpu = HumanoidEnv(HumanoidEnvConfig(num_envs=2, motion_file=motion), seed=0)
    warp = HumanoidEnv(HumanoidEnvConfig(num_envs=2, motion_file=motion, backend="mujoco_warp"), seed=0)
    assert float((cpu.obs - warp.obs).abs().max()) < 1e-5
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        a = torch.rand(2, 28, generator=gen) * 0.6 - 0.3
        o1, _, _, _ = cpu.step(a)
        o2, _, _, _ = warp.step(a)
    # float32 (Warp) against float64 (MuJoCo) after 5 control steps with contacts
    assert float((o1 - o2).abs().max()) < 5e-3


def test_render_writes_policy_beside_reference(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    import mujoco

    try:
        mujoco.Renderer(mujoco.MjModel.from_xml_path(str(sk.MJCF_PATH)), 24, 32).close()
    except Exception as err:  # no EGL/OSMesa on this machine
        if os.environ.get("NEAR_REQUIRE_RENDER"):
            pytest.fail(f"MuJoCo's renderer cannot start and NEAR_REQUIRE_RENDER is set (make gl): {err}")
        pytest.skip(f"no OpenGL for MuJoCo's renderer here: {err}")
    run_dir = str(tmp_path / "run")
    run_cli(["train", "rl", "task=Humanoid", f"run_dir={run_dir}", *TINY, "max_iterations=1"], capsys)
    out = str(tmp_path / "clip.gif")
    printed = run_cli(["render", run_dir, "--out", out, "--steps", "4", "--width", "64", "--height", "48"], capsys)
    assert "wrote" in printed
    # whether it walks, beside the clip: the synthetic walk's reference moves forward at about 1 m/s
    speeds = re.search(r"root speed: policy ([0-9.]+) m/s, reference ([0-9.]+) m/s \(([0-9.]+|nan)x\); "
                       r"the policy's lower foot changed sides (\d+) times; "
                       r"upright \(pelvis above 0.5 m\) (\d+) of 4 steps", printed)
    assert speeds and 0.3 < float(speeds.group(2)) < 3.0, printed
    from PIL import Image

    clip = Image.open(out)
    assert clip.size == (128, 48) and clip.n_frames == 4
    frame = np.asarray(clip.convert("L"), dtype=np.float32)
    # both halves drawn (a humanoid on a floor is not one flat colour), and they differ
    assert frame[:, :64].std() > 5 and frame[:, 64:].std() > 5
    assert np.abs(frame[:, :64] - frame[:, 64:]).mean() > 1
    from near.cli import main

    assert main(["render", str(tmp_path / "nothing"), "--out", out]) == 2
    assert "no config.yaml" in capsys.readouterr().err
