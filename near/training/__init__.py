"""The training core: vectorized PyTorch environments, the NCSN energy model, and the RL
algorithms (NEAR, PPO; AMP and tracking from issue 5) registered with rl-games.

Layout (a reader follows the data's path):
- ``envs/base.py``: the vectorized-environment interface every task implements.
- ``envs/maze.py``: NEAR's 2-D maze, batched in torch.
- ``demos.py``: expert demonstrations from a scripted planner (on-disk format, cache).
- ``ncsn/``: the noise-conditioned energy model, its loss and its trainer (stage ``ncsn``).
- ``algos/``: rl-games agents (``ppo.py`` base loop with checkpoints/signals, ``near.py``).
- ``registry.py``: task name -> environment, algorithm name -> rl-games builders.
- ``config.py``: hydra composition over ``cfg/``; ``entry.py``: the two stage entry points.

Heavy imports (torch, rl_games, hydra) stay inside functions or in submodules so that
``import near.training`` is cheap.
"""
