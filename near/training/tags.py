"""Tensorboard tags written by the training core (for log parsing and figures).

Steps: ``ncsn`` tags use the iteration; rl tags ending in ``/step`` (and rl-games' ``losses/*``,
``info/*``, ``performance/*``) use environment frames; ``/iter`` uses the PPO epoch; ``/time``
uses seconds of training. Every tag is written at most once per step (resumes truncate).
"""

NCSN = (
    "loss",                                     # annealed DSM loss, every iteration
    "demo_data_energy/sigma_level_{c}",         # mean energy of held-out demo transitions
    "random_data_energy/sigma_level_{c}",       # mean energy of random transitions (should be lower)
)

#: rl-games' own (every rl algorithm)
RL_GAMES = (
    "losses/a_loss", "losses/c_loss", "losses/entropy", "losses/bounds_loss",
    "info/last_lr", "info/lr_mul", "info/e_clip", "info/kl", "info/epochs",
    "performance/step_inference_rl_update_fps", "performance/step_inference_fps", "performance/step_fps",
    "performance/rl_update_time", "performance/step_inference_time", "performance/step_time",
    "rewards/step", "rewards/iter", "rewards/time", "shaped_rewards/step",
    "episode_lengths/step", "episode_lengths/iter", "episode_lengths/time",
)

#: per-episode task metrics of the maze (mean over the last 100 finished episodes)
MAZE_EPISODE = ("success_rate/step", "goal_distance/step", "demo_distance/step")

#: NEAR's own (names as in github.com/anishhdiwan/near)
NEAR = (
    "minibatch_combined_reward/step", "minibatch_shaped_task_reward/step", "minibatch_energy_reward/step",
    "minibatch_energy/step", "ncsn_perturbation_level/step",
)
