"""Optuna studies of a search sweep, in journal storage inside the sweep folder.

The journal is an append-only log file (``EXP/search/journal.log``): unlike Optuna's SQLite
storage it is safe on network filesystems, and a controller killed mid-write leaves at most one
torn line, which the journal reader skips. One study per grid point of the spec's axes (named by
the point, ``search`` when there are no axes).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np

from near.sweep.search_block import SearchConfig, to_template

JOURNAL = Path("search") / "journal.log"
JOB_ATTR = "job_id"


def journal_path(exp_dir: str | os.PathLike) -> Path:
    """Where the sweep's study journal lives."""
    return Path(exp_dir) / JOURNAL


def has_search(exp_dir: str | os.PathLike) -> bool:
    """True when the sweep folder holds a study journal."""
    return journal_path(exp_dir).is_file()


def storage(exp_dir: str | os.PathLike):
    """Optuna journal storage over ``EXP/search/journal.log`` (created on first use)."""
    import optuna

    path = journal_path(exp_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # optuna >= 4
        from optuna.storages.journal import JournalFileBackend as Backend
    except ImportError:  # older releases name it JournalFileStorage
        from optuna.storages import JournalFileStorage as Backend
    return optuna.storages.JournalStorage(Backend(str(path)))


def study_name(point: dict[str, Any]) -> str:
    """``motion=circle seed=1`` for a point of the axes; ``search`` without axes."""
    from near.sweep.spec import format_value

    return " ".join(f"{k}={format_value(v)}" for k, v in point.items()) or "search"


def sampler(cfg: SearchConfig, index: int = 0):
    """Optuna's sampler for ``cfg.sampler``; seeded with ``cfg.seed + index`` when ``cfg.seed`` is set
    (``index``: the study's grid point, so the studies of a sweep explore independently)."""
    import optuna

    seed = None if cfg.seed is None else cfg.seed + index
    if cfg.sampler in ("grid", "random"):  # grid: the configs are enqueued (see open_study)
        return optuna.samplers.RandomSampler(seed=seed)
    # the constant liar keeps parallel asks apart (running trials count as bad guesses)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=cfg.parallel > 1)


def pruner(cfg: SearchConfig):
    """Optuna's pruner for ``cfg.pruner`` (NopPruner without one)."""
    import optuna

    p = cfg.pruner
    if p is None:
        return optuna.pruners.NopPruner()
    if p.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup, n_warmup_steps=p.warmup)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, p.min_resource), reduction_factor=p.reduction)


def open_study(exp_dir: str | os.PathLike, cfg: SearchConfig, name: str, store=None, index: int = 0):
    """The study ``name`` (the ``index``-th grid point) of the sweep, created the first time."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(storage=store or storage(exp_dir), study_name=name, direction=cfg.direction,
                             sampler=sampler(cfg, index), pruner=pruner(cfg), load_if_exists=True)
    done = len(st.get_trials(deepcopy=False))
    if cfg.sampler == "grid" and not done:
        # every grid config as a queued trial, in a seeded random order; Optuna's GridSampler would
        # do the same but stops the study from inside tell, which only works in study.optimize
        configs = list(itertools.product(*[p.grid_values() for p in cfg.space]))
        for k in np.random.default_rng(cfg.seed).permutation(len(configs)):
            st.enqueue_trial({p.name: v for p, v in zip(cfg.space, configs[k])})
    if done and cfg.seed is not None:
        # a seeded sampler restarted from its seed would propose the first trials' configs again
        st.sampler = sampler(cfg, index + 100_003 * done)
    return st


def suggest(trial, cfg: SearchConfig) -> dict[str, Any]:
    """Ask the trial for a value of every dimension (template-ready values)."""
    out = {}
    for p in cfg.space:
        if p.kind in ("uniform", "loguniform"):
            v = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.kind == "loguniform")
        elif p.kind == "int":
            v = trial.suggest_int(p.name, int(p.low), int(p.high), step=p.step or 1)
        else:
            v = trial.suggest_categorical(p.name, list(p.choices))
        out[p.name] = to_template(v)
    return out


def load_studies(exp_dir: str | os.PathLike) -> list:
    """Every study of the sweep's journal (for status and report)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = storage(exp_dir)
    return [optuna.load_study(study_name=s.study_name, storage=store) for s in optuna.get_all_study_summaries(store)]
