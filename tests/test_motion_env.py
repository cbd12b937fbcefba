"""The motion-imitation environment and its reference motions (no training)."""

import math

import pytest
import torch

from near.errors import ConfigError
from near.training import motions
from near.training.envs.motion import MotionEnvConfig, MotionImitationEnv
from near.training.settings import from_mapping

torch.set_num_threads(1)


def _oracle(env: MotionImitationEnv) -> torch.Tensor:
    """A hand-written controller that follows the reference (feed-forward velocity + P on position)."""
    ref = env.reference_state(phase=env.phase + env.phase_step())
    root = ref[:, 2:4] * env.cfg.kd_root / (0.5 * env.cfg.kp_root) + 2.0 * (ref[:, :2] - env.state[:, :2])
    return torch.cat([root.clamp(-1, 1), (ref[:, 4:6] / 0.5).clamp(-1, 1)], 1)


def _run(env: MotionImitationEnv, policy, steps: int) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for _ in range(steps):
        _, _, done, infos = env.step(policy(env))
        for k, v in infos.get("episode_metrics", {}).items():
            sums.setdefault(k, []).append(float(v[done].mean()))
    return {k: sum(v) / len(v) for k, v in sums.items()}


def test_builtin_motions_differ_in_speed_and_loop():
    circle, fig8, step = (motions.load_motion(n) for n in ("circle", "figure8", "stepturn"))
    speed = {m.name: m.frames[:, 2:4].norm(dim=1) for m in (circle, fig8, step)}
    assert speed["circle"].std() < 1e-3 and speed["circle"].mean() == pytest.approx(2 * math.pi / 8, rel=1e-3)
    assert speed["figure8"].max() > 2 * speed["circle"].max()
    # the step turn's velocity direction jumps by 90 degrees between two frames
    v = step.frames[:, 2:4]
    cos = (v[1:] * v[:-1]).sum(1) / (v[1:].norm(dim=1) * v[:-1].norm(dim=1))
    assert float(cos.min()) < 0.75
    for m in (circle, fig8, step):  # loops: last frame flows into the first
        gap = (m.root[0] - m.root[-1]).norm()
        assert float(gap) < 2.5 * float(speed[m.name].max()) * m.dt


def test_motion_files_by_name_and_yaml_list(tmp_path):
    assert [m.name for m in motions.load_motions("all.yaml")] == ["circle", "figure8", "stepturn"]
    f = tmp_path / "two.yaml"
    f.write_text("motions:\n  - file: figure8\n    weight: 3\n  - circle\n")
    loaded = motions.load_motions(str(f))
    assert [(m.name, m.weight) for m in loaded] == [("figure8", 3.0), ("circle", 1.0)]
    with pytest.raises(ConfigError, match="unknown reference motion 'walk'.*circle"):
        motions.load_motions("walk")
    with pytest.raises(ConfigError, match="not found"):
        motions.load_motions("missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("motions: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*motions"):
        motions.load_motions(str(bad))


def test_reset_uses_reference_state_and_paired_obs_match_demo_layout():
    env = MotionImitationEnv(MotionEnvConfig(num_envs=64, motion_file="figure8", num_obs_steps=3), seed=1)
    assert torch.allclose(env.state, env.reference_state(), atol=1e-6)
    demo = env.demo_transitions()
    assert demo.shape[1] == env.paired_obs_dim == 24
    # demo rows: consecutive reference frames, oldest first, one control step apart
    step = env.motions[0].frames
    assert torch.allclose(demo[0, 16:], step[0], atol=1e-6) and torch.allclose(demo[0, 8:16], step[-1], atol=1e-6)
    _, _, _, infos = env.step(_oracle(env))
    paired = infos["paired_obs"].reshape(64, 3, 8)
    assert torch.allclose(paired[:, -1], env.state, atol=1e-6)
    # an oracle transition lies close to the demonstrations (nearest demo row)
    dist = torch.cdist(infos["paired_obs"][:, [0, 1, 8, 9, 16, 17]], demo[:, [0, 1, 8, 9, 16, 17]]).min(dim=1).values
    assert float(dist.max()) < 0.1


def test_oracle_imitates_and_random_does_not():
    cfg = dict(num_envs=32, motion_file="stepturn", episode_length=40)
    oracle = _run(MotionImitationEnv(MotionEnvConfig(**cfg), seed=0), _oracle, 80)
    rand = _run(MotionImitationEnv(MotionEnvConfig(**cfg), seed=0), lambda e: torch.rand(32, 4) * 2 - 1, 80)
    assert set(oracle) >= {"dtw_error", "sparc", "root_velocity", "root_acceleration", "root_jerk", "success_rate"}
    assert oracle["dtw_error"] < 0.05 < 0.5 < rand["dtw_error"]
    assert oracle["success_rate"] == 1.0 and rand["success_rate"] < 0.5
    assert oracle["root_jerk"] < rand["root_jerk"] / 10
    assert oracle["sparc"] > rand["sparc"]


def test_time_outs_and_reference_early_termination():
    env = MotionImitationEnv(MotionEnvConfig(num_envs=8, motion_file="circle", episode_length=10,
                                             early_termination="reference", termination_distance=0.2), seed=0)
    # pushing away from the reference ends the episode early, not by time-out
    for i in range(10):
        away = -env.reference_state()[:, 2:4] / env.reference_state()[:, 2:4].norm(dim=1, keepdim=True)
        _, _, done, infos = env.step(torch.cat([away, torch.zeros(8, 2)], 1))
        if done.any():
            break
    assert done.all() and i < 9 and infos["time_outs"].sum() == 0 and infos["terminate"].all()
    assert "episode_metrics" in infos and infos["episode_metrics"]["dtw_error"].shape == (8,)
    env = MotionImitationEnv(MotionEnvConfig(num_envs=8, motion_file="circle", episode_length=10), seed=0)
    for i in range(10):
        _, _, done, infos = env.step(_oracle(env))
    assert done.all() and infos["time_outs"].all()


def test_state_dict_continues_identically():
    a = MotionImitationEnv(MotionEnvConfig(num_envs=16, motion_file="all.yaml", episode_length=7), seed=3)
    for _ in range(5):
        a.step(torch.rand(16, 4) * 2 - 1)
    snap = a.state_dict()
    b = MotionImitationEnv(MotionEnvConfig(num_envs=16, motion_file="all.yaml", episode_length=7), seed=99)
    b.load_state_dict(snap)
    acts = [torch.rand(16, 4) * 2 - 1 for _ in range(12)]
    for act in acts:
        oa, ra, da, _ = a.step(act)
        ob, rb, db, _ = b.step(act)
        assert torch.equal(oa, ob) and torch.equal(ra, rb) and torch.equal(da, db)


def test_bad_env_config_is_rejected():
    with pytest.raises(ConfigError, match="earlyTermination"):
        from_mapping(MotionEnvConfig, {"earlyTermination": "sometimes"}, "task.env")
    with pytest.raises(ConfigError, match="stateInit"):
        from_mapping(MotionEnvConfig, {"stateInit": "Hybrid"}, "task.env")


def test_online_dtw_and_episode_metrics_match_near_metrics_on_the_recorded_path():
    from near import metrics

    env = MotionImitationEnv(MotionEnvConfig(num_envs=4, motion_file="figure8", episode_length=10), seed=2)
    start = env.start_phase.clone()
    path = [env.state[:, :2].clone()]
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        _, _, done, infos = env.step(torch.rand(4, 4, generator=gen) * 2 - 1)
        path.append(infos["paired_obs"][:, -8:-6])
    assert done.all()
    path = torch.stack(path, 1).double()
    ref = torch.stack([env.motions[0].root_path(float(p), 11) for p in start]).double()
    expected = metrics.episode_metrics(path, ref, env.dt)
    for key, values in expected.items():
        assert torch.allclose(infos["episode_metrics"][key].double(), values, rtol=1e-3, atol=1e-4), key
