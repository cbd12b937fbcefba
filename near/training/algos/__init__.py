"""rl-games agents of the training core (registered in ``near/training/registry.py``)."""
