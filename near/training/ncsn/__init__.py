"""NEAR's energy model: ``model.py`` (network, loss, EMA), ``trainer.py`` (stage ``ncsn``),
``reward.py`` (energy reward, noise-level annealing, reward standardisation for the RL stage)."""
