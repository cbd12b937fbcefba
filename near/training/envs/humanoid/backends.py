"""Batched simulators of the humanoid: MuJoCo on the CPU, MuJoCo Warp on an NVIDIA GPU.

Both expose the same small interface to :class:`~near.training.envs.humanoid.env.HumanoidEnv`:
``set_state(mask, qpos, qvel)`` (the envs where `mask` (N,) is True take those rows of qpos (N, 35)
and qvel (N, 34)), ``step(ctrl, n)`` (n physics steps with PD targets `ctrl`;
afterwards ``unstable`` (N,) marks worlds the simulator found unstable in them), and ``read()``
-> qpos (N, 35), qvel (N, 34), body positions (N, 15, 3) and a (N, 15) mask of bodies in contact
(with the floor or with another body: both bodies of a self-contact), as torch tensors on the
env's device.
"""

from __future__ import annotations

import numpy as np
import torch

from near.errors import ConfigError
from near.training.envs.humanoid import skeleton as sk


def load_model():
    import mujoco

    return mujoco.MjModel.from_xml_path(str(sk.MJCF_PATH))


class MujocoBackend:
    """``num_envs`` MjData of one MjModel, stepped one after the other on this CPU core."""

    masked_writes = False  # set_state writes env by env: the env looks up only the reset envs' states

    def __init__(self, num_envs: int, device: torch.device):
        import mujoco

        self.mujoco = mujoco
        self.model = load_model()
        self.device = device
        self.datas = [mujoco.MjData(self.model) for _ in range(num_envs)]
        self.geom_body = self.model.geom_bodyid.copy()  # world (the floor) -> 0, pelvis -> 1
        self.nq, self.nv = self.model.nq, self.model.nv
        # MuJoCo resets a world whose accelerations blow up (qpos0, time 0) with only a warning;
        # a simulated time behind the steps taken gives that away
        self.sim_time = np.zeros(num_envs)
        self.unstable = torch.zeros(num_envs, dtype=torch.bool, device=device)

    def set_state(self, mask: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        qpos, qvel = qpos.detach().cpu().double().numpy(), qvel.detach().cpu().double().numpy()
        for i in np.flatnonzero(mask.cpu().numpy()):
            d = self.datas[i]
            self.mujoco.mj_resetData(self.model, d)
            d.qpos[:] = qpos[i]
            d.qvel[:] = qvel[i]
            self.mujoco.mj_forward(self.model, d)
            self.sim_time[i] = d.time

    def step(self, ctrl: torch.Tensor, n: int) -> None:
        ctrl = ctrl.detach().cpu().double().numpy()
        step, model = self.mujoco.mj_step, self.model
        for i, d in enumerate(self.datas):
            d.ctrl[:] = ctrl[i]
            step(model, d, n)
        self.sim_time += n * model.opt.timestep
        times = np.fromiter((d.time for d in self.datas), float, len(self.datas))
        reset = times < self.sim_time - 0.5 * model.opt.timestep
        self.sim_time = times
        self.unstable = torch.from_numpy(reset).to(self.device)

    def read(self):
        n = len(self.datas)
        qpos = np.empty((n, self.nq))
        qvel = np.empty((n, self.nv))
        xpos = np.empty((n, 15, 3))
        touch = np.zeros((n, 16), dtype=bool)
        for i, d in enumerate(self.datas):
            qpos[i], qvel[i], xpos[i] = d.qpos, d.qvel, d.xpos[1:]
            if d.ncon:
                touch[i, self.geom_body[d.contact.geom].ravel()] = True
        to = lambda a: torch.from_numpy(a).to(self.device, torch.float32)  # noqa: E731
        return to(qpos), to(qvel), to(xpos), torch.from_numpy(touch[:, 1:]).to(self.device)


class WarpBackend:
    """All envs as worlds of one MuJoCo Warp model on the GPU; torch sees its arrays without copies."""

    masked_writes = True  # set_state writes every world under the mask: no indices read back

    def __init__(self, num_envs: int, device: torch.device):
        try:
            import mujoco_warp as mjw
            import warp as wp
        except ImportError as err:
            raise ConfigError("sim.backend=mujoco_warp needs `pip install near[gpu]` (mujoco-warp, warp-lang)") from err
        self.wp, self.mjw = wp, mjw
        wp.init()
        # Warp's CPU device works too (slowly): it lets CPU tests check this backend against MuJoCo
        self.wp_device = f"cuda:{device.index or 0}" if device.type == "cuda" else "cpu"
        self.device = device
        model = load_model()
        self.nq, self.nv = model.nq, model.nv
        with wp.ScopedDevice(self.wp_device):
            self.m = mjw.put_model(model)
            # the solver and its linesearch stop at MuJoCo's iteration limits by design, as on the
            # CPU; MuJoCo Warp would print that from every world at every step (pool overflows
            # still warn)
            self.m.opt.warn_overflow &= ~(mjw.OverflowType.ITERATIONS | mjw.OverflowType.LS_ITERATIONS)
            # both sizes are per world (contacts pool across worlds, constraints do not); with
            # self-collision a fallen humanoid can still exceed 192 constraint rows, which MuJoCo
            # Warp reports as an overflow and drops (measured at 16,384 envs, see the README)
            self.d = mjw.make_data(model, nworld=num_envs, nconmax=48, njmax=192)
        t = wp.to_torch
        self.qpos, self.qvel, self.ctrl = t(self.d.qpos), t(self.d.qvel), t(self.d.ctrl)
        self.xpos = t(self.d.xpos)
        self.warmstart = t(self.d.qacc_warmstart)
        self.nacon = t(self.d.nacon)
        self.contact_geom, self.contact_world = t(self.d.contact.geom), t(self.d.contact.worldid)
        self.geom_body = torch.as_tensor(model.geom_bodyid.astype(np.int64), device=device)  # world -> 0
        self.ngeom = model.ngeom
        self.slots = torch.arange(self.contact_geom.shape[0], device=device)
        # a blown-up world shows as non-finite state, which HumanoidEnv checks itself
        self.unstable = torch.zeros(num_envs, dtype=torch.bool, device=device)
        self._graphs: dict[int, object] = {}

    def _capture(self, fn):
        """A CUDA graph of `fn` (replayed by :meth:`_launch`); on the CPU, `fn` itself."""
        wp = self.wp
        if self.wp_device == "cpu":
            return fn
        with wp.ScopedDevice(self.wp_device):
            fn()  # compile the kernels outside the capture
            with wp.ScopedCapture() as cap:
                fn()
        return cap.graph

    def _launch(self, graph) -> None:
        if callable(graph):
            with self.wp.ScopedDevice(self.wp_device):
                graph()
        else:
            self.wp.capture_launch(graph)

    def set_state(self, mask: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        # masked writes into Warp's own arrays (torch views of them): no indices, so nothing is read
        # back to the host; no forward pass: the next step begins with one, and HumanoidEnv reads
        # nothing before it
        row = mask[:, None]
        torch.where(row, qpos.to(self.qpos.dtype), self.qpos, out=self.qpos)
        torch.where(row, qvel.to(self.qvel.dtype), self.qvel, out=self.qvel)
        self.warmstart.masked_fill_(row, 0.0)

    def step(self, ctrl: torch.Tensor, n: int) -> None:
        self.ctrl.copy_(ctrl)
        if n not in self._graphs:
            def run():
                for _ in range(n):
                    self.mjw.step(self.m, self.d)
            self._graphs[n] = self._capture(run)
        self._launch(self._graphs[n])

    def read(self):
        n = self.qpos.shape[0]
        # contacts fill the first nacon slots of a pool shared by all worlds; counting over every
        # slot with a validity mask avoids reading nacon back to the host (a device sync)
        valid = (self.slots < self.nacon[0]).int()
        body = self.geom_body[self.contact_geom.long().clamp(0, self.ngeom - 1)]  # (slots, 2), the floor's: 0
        slot = self.contact_world.long().clamp(0, n - 1)[:, None] * 16 + body
        touch = torch.zeros(n * 16, dtype=torch.int32, device=self.device).index_add_(
            0, slot.flatten(), valid.repeat_interleave(2)) > 0
        return (self.qpos.float().clone(), self.qvel.float().clone(), self.xpos[:, 1:].float().clone(),
                touch.view(n, 16)[:, 1:])


BACKENDS = {"mujoco": MujocoBackend, "mujoco_warp": WarpBackend}
