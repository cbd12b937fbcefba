"""`near train ncsn|rl OVERRIDES...`: the training core's stages (NEAR's train_ncsn.py / train.py).

Overrides are hydra overrides over the repository's cfg/ tree, with NEAR's names, e.g.
``near train rl task=mazeNEAR seed=42 run_dir=runs/x ++train.params.config.near_config.inference.sigma_level=-1``.
Exit status: 0 finished, 2 bad config, 3 interrupted by SIGTERM/SIGUSR2 (checkpoint written; run again to resume).
"""

from __future__ import annotations

import argparse

EPILOG = """examples:
  near train ncsn task=mazeNEAR run_dir=runs/ncsn ++train.params.config.near_config.training.n_iters=2000
  near train rl task=mazeNEAR run_dir=runs/near max_iterations=200 \\
      ++train.params.config.near_config.inference.eb_model_checkpoint=runs/ncsn/nn/checkpoint.pth \\
      ++train.params.config.near_config.inference.running_mean_std_checkpoint=runs/ncsn/nn/running_mean_std.pth \\
      ++train.params.config.near_config.inference.sigma_level=-1
  near train rl task=mazePPO run_dir=runs/ppo max_iterations=200 device=cuda:0
exit status: 0 finished, 2 bad config, 3 interrupted (checkpoint written; the same command resumes)"""


def _ncsn(args: argparse.Namespace) -> int:
    from near.training.entry import train_ncsn_stage

    return train_ncsn_stage(list(args.overrides))


def _rl(args: argparse.Namespace) -> int:
    from near.training.entry import train_rl_stage

    return train_rl_stage(list(args.overrides))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` group and its `ncsn` / `rl` commands."""
    train = subparsers.add_parser("train", help="run a training stage (ncsn energy model, rl policy)",
                                  description=__doc__, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = train.add_subparsers(dest="stage", required=True, metavar="{ncsn,rl}")
    for name, handler, text in (("ncsn", _ncsn, "train NEAR's energy model (NCSN) on the task's demonstrations"),
                                ("rl", _rl, "train a policy (NEAR, PPO, AMP, tracking: picked by task=...)")):
        stage = stages.add_parser(name, help=text, description=text, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        stage.add_argument("overrides", nargs="*", help="hydra overrides (key=value, ++key=value)")
        stage.set_defaults(func=handler)
