"""``near render``: a clip of a trained humanoid policy beside its reference motion.

The run's ``config.yaml`` rebuilds its task with one env on the CPU (MuJoCo); the policy's mean
actions drive the character (left half of every frame) while a second, kinematic copy of the
model shows the reference motion at the same time (right half). Beside the clip it reports whether
the policy walks: its root's mean horizontal speed against the reference's, how often its feet
alternate and how long it stays upright (:class:`Rendered`). Frames come from MuJoCo's renderer:
``MUJOCO_GL=egl`` by default (a GPU machine, or Mesa's EGL on a CPU), ``osmesa`` with Debian's
``libosmesa6``. ``.gif`` is written with Pillow, ``.mp4`` with imageio's ffmpeg when installed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from near import metrics
from near.errors import ConfigError


def _camera(mujoco, target: np.ndarray):
    cam = mujoco.MjvCamera()
    cam.lookat[:] = [target[0], target[1], 0.9]
    cam.distance, cam.azimuth, cam.elevation = 3.5, 90.0, -12.0
    return cam


def write_clip(frames: list[np.ndarray], out: str, fps: int) -> None:
    """Write frames (H, W, 3 uint8) as a .gif or .mp4."""
    if out.endswith(".gif"):
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(out, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    elif out.endswith(".mp4"):
        try:
            import imageio.v2 as imageio
            imageio.mimwrite(out, frames, fps=fps)
        except (ImportError, ValueError) as err:
            raise ConfigError(f"--out {out}: writing .mp4 needs imageio with ffmpeg (pip install imageio[ffmpeg]); "
                              f"or write a .gif ({err})") from None
    else:
        raise ConfigError(f"--out {out}: expected a .gif or .mp4 file name")


#: a pelvis lower than this has fallen (it stands at about 0.9 m); a fallen body can still slide
UPRIGHT_M = 0.5


@dataclasses.dataclass(frozen=True)
class Rendered:
    """What a rendered rollout shows: its frames, and whether the policy walks like its reference."""

    frames: int
    policy_speed: float      # m/s, the root's mean horizontal speed (near.metrics.travel_speed)
    reference_speed: float   # m/s, the reference motion's over the same steps
    foot_alternations: int   # times the policy's lower foot changed sides (near.metrics.foot_alternations)
    upright: int             # steps with the policy's root (pelvis) above UPRIGHT_M

    def summary(self) -> str:
        ratio = self.policy_speed / self.reference_speed if self.reference_speed > 0 else float("nan")
        return (f"root speed: policy {self.policy_speed:.2f} m/s, reference {self.reference_speed:.2f} m/s "
                f"({ratio:.2f}x); the policy's lower foot changed sides {self.foot_alternations} times; "
                f"upright (pelvis above {UPRIGHT_M} m) {self.upright} of {self.frames} steps")


def render_run(run_dir: str, out: str, checkpoint: str | None = None, steps: int = 150,
               width: int = 320, height: int = 240, seed: int = 0) -> Rendered:
    """Roll out the run's policy for `steps` control steps and write the side-by-side clip."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import mujoco

    from near.training import registry
    from near.training.envs.humanoid import skeleton as sk
    from near.training.settings import HumanoidSim, HumanoidTask, read_run_settings
    from near.training.eval_metrics import load_policy

    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml (is it a `near train rl` run directory?)")
    ckpt = checkpoint or str(Path(run_dir) / "nn" / "checkpoint.pth")
    settings = read_run_settings(str(config))
    task = settings.task
    if not isinstance(task, HumanoidTask):
        raise ConfigError(f"{run_dir}: near render draws the humanoid tasks (Humanoid*), not task {task.name}")
    task = dataclasses.replace(task, sim=HumanoidSim("mujoco"),
                               env=dataclasses.replace(task.env, enable_early_termination=False))
    env = registry.make_env(task, num_envs=1, device="cpu", seed=seed)
    policy = load_policy(settings, ckpt, env, "cpu")
    model, data = env.sim.model, env.sim.datas[0]
    ref = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, height, width)
    frames = []
    feet = [model.body(name).id for name in ("left_foot", "right_foot")]
    moves: dict[str, list[np.ndarray]] = {"policy": [], "reference": []}
    foot_z: list[np.ndarray] = []
    upright = 0
    obs = env.reset()
    last = {"policy": data.xpos[1, :2].copy(), "reference": None}
    with torch.no_grad():
        for _ in range(steps):
            obs, _, done, _ = env.step(policy(obs))
            s = env.table.state(env.motion_id, env.start_time + env.progress.float() * env.dt)
            rot = s["root_rot"][0]
            hinges = sk.hinges_from_quats(s["joint_rot"][0], env.lower, env.upper)
            ref.qpos[:] = torch.cat([s["root_pos"][0], rot[3:], rot[:3], hinges]).double().numpy()
            mujoco.mj_forward(model, ref)
            for who, now in (("policy", data.xpos[1, :2].copy()), ("reference", ref.xpos[1, :2].copy())):
                if last[who] is not None and not bool(done[0]):  # a reset's jump is no movement
                    moves[who].append(now - last[who])
                last[who] = now
            foot_z.append(data.xpos[feet, 2].copy())
            upright += int(data.xpos[1, 2] > UPRIGHT_M)
            halves = []
            for d in (data, ref):
                renderer.update_scene(d, camera=_camera(mujoco, d.xpos[1]))
                halves.append(renderer.render().copy())
            frames.append(np.concatenate(halves, axis=1))
    renderer.close()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_clip(frames, out, fps=int(round(1 / env.dt)))
    speed = {who: metrics.travel_speed(np.array(m), env.dt) if m else 0.0 for who, m in moves.items()}
    z = np.array(foot_z)
    return Rendered(len(frames), speed["policy"], speed["reference"], metrics.foot_alternations(z[:, 0], z[:, 1]),
                    upright)
