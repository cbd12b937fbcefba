"""Where near keeps the data it generates (demonstrations, synthetic motions)."""

from __future__ import annotations

import os


def cache_root(cache_dir: str | None = None) -> str:
    """`cache_dir` if given, else ``$NEAR_CACHE_DIR``, else ``$XDG_CACHE_HOME/near``, else ``~/.cache/near``."""
    if cache_dir:
        return cache_dir
    if os.environ.get("NEAR_CACHE_DIR"):
        return os.environ["NEAR_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "near")
