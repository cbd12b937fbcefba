"""The humanoid imitation task (NEAR's HumanoidAMP) on MuJoCo / MuJoCo Warp; registers ``Humanoid``."""

from near.training.envs.humanoid.env import HumanoidEnv, HumanoidEnvConfig, make_humanoid_env
from near.training.registry import register_env

register_env("Humanoid", make_humanoid_env)

__all__ = ["HumanoidEnv", "HumanoidEnvConfig", "make_humanoid_env"]
