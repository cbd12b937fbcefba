"""near: experiment orchestration and sweeps for imitation learning (NEAR, AMP, PPO).

The flow, one module or subpackage per stage:
sweep (spec -> expand -> validate) -> jobtable -> executors (local, slurm) -> training -> report (logs, stats, figures).
"""

__version__ = "0.1.0"
