"""Hydra composition over the repository's ``cfg/`` tree (NEAR's override names).

``compose(["task=mazeNEAR", "seed=42", "++train.params.config.near_config.inference.sigma_level=-1"])``
returns the composed config. The tree is found in ``$NEAR_CFG_DIR`` if set, else in the
``cfg/`` folder next to the ``near`` package (the repository checkout), else in ``./cfg``.
Overrides that do not compose raise :class:`near.errors.ConfigError` naming the override.
"""

from __future__ import annotations

import os
from typing import Any

from near.errors import ConfigError

_resolvers_registered = False


def find_cfg_dir() -> str:
    """Absolute path of the config tree (see the module docstring for the search order)."""
    candidates = []
    if os.environ.get("NEAR_CFG_DIR"):
        env_dir = os.environ["NEAR_CFG_DIR"]
        if not os.path.isfile(os.path.join(env_dir, "config.yaml")):
            raise ConfigError(f"NEAR_CFG_DIR={env_dir} has no config.yaml")
        return os.path.abspath(env_dir)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates += [os.path.join(package_root, "cfg"), os.path.join(os.getcwd(), "cfg")]
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, "config.yaml")):
            return os.path.abspath(candidate)
    raise ConfigError(f"no hydra config tree found (looked in {', '.join(candidates)}); set NEAR_CFG_DIR")


def register_resolvers() -> None:
    """The OmegaConf resolvers NEAR's (IsaacGymEnvs') configs use."""
    global _resolvers_registered
    if _resolvers_registered:
        return
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("eq", lambda x, y: str(x).lower() == str(y).lower(), replace=True)
    OmegaConf.register_new_resolver("contains", lambda x, y: str(x).lower() in str(y).lower(), replace=True)
    OmegaConf.register_new_resolver("if", lambda pred, a, b: a if pred else b, replace=True)
    OmegaConf.register_new_resolver("resolve_default", lambda default, arg: default if arg in ("", None) else arg,
                                    replace=True)
    _resolvers_registered = True


def config_groups(cfg_dir: str) -> frozenset[str]:
    """The config groups of a tree (its folders: ``task``, ``train``)."""
    return frozenset(entry.name for entry in os.scandir(cfg_dir) if entry.is_dir())


def compose(overrides: list[str], cfg_dir: str | None = None) -> Any:
    """Compose ``config.yaml`` with ``overrides``; resolve it; clear errors for bad overrides.

    The settings' declared defaults are registered first (the ``*_base`` configs the files of
    ``cfg/task`` and ``cfg/train`` extend; see :mod:`near.training.settings`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from near.training.settings import register_bases

    register_resolvers()
    register_bases()
    cfg_dir = cfg_dir or find_cfg_dir()
    try:
        with initialize_config_dir(config_dir=cfg_dir, version_base="1.3", job_name="near"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"overrides {' '.join(overrides)!r} do not compose with {cfg_dir}: {message}") from err
    return cfg
