"""The ``isaacgym`` simulation backend of the ``Humanoid*`` tasks: a guarded import with a clear error.

near runs those tasks on MuJoCo (``task.sim.backend=mujoco`` on the CPU, ``mujoco_warp`` on a
GPU). Isaac Gym is not on any package registry and cannot be installed or tested here, so nothing
claims to drive it; selecting it explains how to get it and what runs instead.
"""

from __future__ import annotations

from near.errors import ConfigError
from near.training.registry import register_env

INSTALL_HINT = (
    "needs NVIDIA Isaac Gym (Preview 4), which is not on PyPI: download it from "
    "https://developer.nvidia.com/isaac-gym, then `pip install -e isaacgym/python` into this "
    "environment and install NEAR's isaacgymenvs tasks (github.com/anishhdiwan/near). "
    "near's own training core does not drive Isaac Gym: it runs the same task on MuJoCo with "
    "task.sim.backend=mujoco (CPU) or mujoco_warp (NVIDIA GPU), the default chosen by `device`."
)


def isaacgym_env(name: str, num_envs: int, device: str, seed: int):
    """Import Isaac Gym or explain how to install it (task ``name``)."""
    try:
        import isaacgym  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"task {name!r} {INSTALL_HINT}") from err
    raise ConfigError(f"task {name!r}: Isaac Gym is installed, but near does not drive Isaac Gym tasks; "
                      "run them with NEAR's own train.py (isaacgymenvs)")


# registered for Humanoid* tasks by near.training.envs.humanoid (sim.backend=isaacgym)
