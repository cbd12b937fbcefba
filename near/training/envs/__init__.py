"""Vectorized PyTorch environments (see ``base.py`` for the interface)."""
