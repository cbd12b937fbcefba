"""The ``search:`` block of a sweep spec, parsed into dataclasses (pure: no I/O, no Optuna).

Format::

    search:
      sampler: tpe            # grid | random | tpe
      trials: 30              # budget: trials per study (one study per grid point of the axes)
      parallel: 4             # trials in flight per study
      metric: eval/f          # a tensorboard tag the trial's job logs
      mode: min               # min | max
      at: last                # last | best | mean_last_N (e.g. mean_last_5)
      seed: 0                 # sampler seed (optional)
      stage: rl               # whose logs hold the metric (default: the last stage)
      space:                  # template variables ${x}, ${lr}, ... of every stage
        x: {uniform: [-5, 5]}
        lr: {loguniform: [1e-5, 1e-2]}
        layers: {int: [1, 4]}             # inclusive; {int: [0, 8], step: 2}
        act: {choice: [relu, tanh]}
      pruner: {kind: median, warmup: 5, startup: 5}   # or {kind: asha, min_resource: 5, reduction: 3}

Axes compose as one study per grid point: ``axes: {motion: [circle, figure8], seed: {count: 3}}``
with ``trials: 20`` runs six independent studies of 20 trials, each proposing configs for its own
point (the per-motion configs NEAR's ``task_specific_cfg`` holds; seeds replicate the search).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

SAMPLERS = ("grid", "random", "tpe")
KINDS = ("uniform", "loguniform", "int", "choice")
PRUNERS = ("median", "asha")
_AT = re.compile(r"^(last|best|mean_last_(\d+))$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# template variables near sets, and the columns of the trials table (near.search.report)
RESERVED = {"run_dir", "job_id", "exp_dir", "sweep", "stage", "study", "trial", "state", "value", "pruned_at",
            "direction"}


@dataclass(frozen=True)
class Param:
    """One dimension of the search space."""

    name: str
    kind: str                    # uniform | loguniform | int | choice
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None      # int only
    choices: tuple = ()          # choice only

    def grid_values(self) -> list:
        """Every value of a discrete dimension (grid sampler)."""
        if self.kind == "choice":
            return list(self.choices)
        return list(range(int(self.low), int(self.high) + 1, self.step or 1))


@dataclass(frozen=True)
class Pruner:
    """Early stopping of losing trials: Optuna's median or successive-halving (ASHA) pruner."""

    kind: str
    warmup: int = 0           # median: steps before a trial can be pruned
    startup: int = 5          # median: finished trials before pruning starts
    min_resource: int = 1     # asha: first rung (in reported steps)
    reduction: int = 3        # asha: keep 1/reduction at each rung


@dataclass(frozen=True)
class SearchConfig:
    """A validated ``search:`` block."""

    sampler: str
    trials: int
    parallel: int
    metric: str
    mode: str
    at: str
    space: tuple[Param, ...]
    stage: str
    seed: int | None = None
    pruner: Pruner | None = None
    params: dict = field(default_factory=dict, compare=False)  # name -> Param

    @property
    def direction(self) -> str:
        return "minimize" if self.mode == "min" else "maximize"

    @property
    def budget(self) -> int:
        """Trials per study: ``trials``, at most the grid's size for the grid sampler."""
        if self.sampler != "grid":
            return self.trials
        return min(self.trials, math.prod(len(p.grid_values()) for p in self.space))


Err = Callable[[str, str], Exception]


def parse_search(raw: Any, stages: Sequence[str], axes: Sequence[str], var_names: set[str], err: Err) -> SearchConfig:
    """Validate a ``search:`` mapping; ``err(key path, message)`` builds the error to raise."""
    where = "search"
    if not isinstance(raw, dict):
        raise err(where, "must be a mapping with sampler, trials, metric and space")
    known = {"sampler", "trials", "parallel", "metric", "mode", "at", "space", "pruner", "seed", "stage"}
    for k in raw:
        if k not in known:
            raise err(f"{where}.{k}", f"unknown key (known: {', '.join(sorted(known))})")
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise err(f"{where}.sampler", f"{sampler!r} is not a sampler ({', '.join(SAMPLERS)})")
    trials = _posint(raw.get("trials"), f"{where}.trials", err)
    parallel = _posint(raw.get("parallel", 1), f"{where}.parallel", err)
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric:
        raise err(f"{where}.metric", "missing: the tensorboard tag whose value the search optimises")
    mode = raw.get("mode", "min")
    if mode not in ("min", "max"):
        raise err(f"{where}.mode", f"{mode!r}: min or max")
    at = str(raw.get("at", "last"))
    m = _AT.match(at)
    if not m or (m.group(2) is not None and int(m.group(2)) < 1):
        raise err(f"{where}.at", f"{at!r}: last, best or mean_last_N (N >= 1)")
    stage = raw.get("stage", stages[-1] if stages else None)
    if stage not in stages:
        raise err(f"{where}.stage", f"unknown stage {stage!r} (stages: {', '.join(stages)})")
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise err(f"{where}.seed", f"must be an integer, not {seed!r}")
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise err(f"{where}.space", "missing: a mapping name -> {uniform|loguniform|int|choice: ...}")
    space = []
    for name, body in space_raw.items():
        name = str(name)
        pw = f"{where}.space.{name}"
        if not _NAME.match(name):
            raise err(pw, "parameter names are identifiers (they are template variables)")
        if name in axes or name in var_names or name in RESERVED:
            raise err(pw, "a search parameter cannot share its name with an axis, a variable or a reserved name")
        space.append(_param(name, body, pw, err))
    if sampler == "grid":
        for p in space:
            if p.kind not in ("int", "choice"):
                raise err(f"{where}.space.{p.name}", "the grid sampler needs discrete dimensions (int or choice)")
    pruner = _pruner(raw["pruner"], f"{where}.pruner", err) if raw.get("pruner") is not None else None
    return SearchConfig(sampler, trials, parallel, metric, mode, at, tuple(space), stage, seed, pruner,
                        {p.name: p for p in space})


def _posint(v: Any, where: str, err: Err) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise err(where, f"must be a positive integer, not {v!r}")
    return v


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _as_float(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _param(name: str, body: Any, where: str, err: Err) -> Param:
    if not isinstance(body, dict):
        raise err(where, "must be a mapping, e.g. {uniform: [0, 1]} or {choice: [a, b]}")
    kinds = [k for k in body if k in KINDS]
    extra = [k for k in body if k not in KINDS and k != "step"]
    if len(kinds) != 1 or extra:
        raise err(where, f"give exactly one of {', '.join(KINDS)} (and 'step' for int)")
    kind = kinds[0]
    arg = body[kind]
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise err(f"{where}.choice", "must be a non-empty list of values")
        if any(isinstance(v, (dict, list)) for v in arg) or len({repr(v) for v in arg}) != len(arg):
            raise err(f"{where}.choice", "values are distinct scalars")
        return Param(name, kind, choices=tuple(arg))
    if isinstance(arg, list):  # YAML reads 1e-3 (no dot) as a string
        arg = [_as_float(v) for v in arg]
    if not isinstance(arg, list) or len(arg) != 2 or not all(_number(v) for v in arg):
        raise err(f"{where}.{kind}", "must be [low, high] (numbers)")
    low, high = arg
    if not low < high:
        raise err(f"{where}.{kind}", f"low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise err(f"{where}.{kind}", "loguniform bounds must be positive")
    step = None
    if kind == "int":
        if not all(isinstance(v, int) for v in arg):
            raise err(f"{where}.int", "bounds are integers")
        step = body.get("step", 1)
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise err(f"{where}.step", f"must be a positive integer, not {step!r}")
    elif "step" in body:
        raise err(f"{where}.step", "only int dimensions take a step")
    return Param(name, kind, low, high, step)


def _pruner(raw: Any, where: str, err: Err) -> Pruner:
    if not isinstance(raw, dict) or raw.get("kind") not in PRUNERS:
        raise err(where, f"must be a mapping with kind: {' | '.join(PRUNERS)}")
    allowed = {"median": {"kind", "warmup", "startup"}, "asha": {"kind", "min_resource", "reduction"}}[raw["kind"]]
    for k, v in raw.items():
        if k not in allowed:
            raise err(f"{where}.{k}", f"unknown key for {raw['kind']} (known: {', '.join(sorted(allowed))})")
        if k != "kind" and (isinstance(v, bool) or not isinstance(v, int) or v < (2 if k == "reduction" else 0)):
            raise err(f"{where}.{k}", f"must be a {'integer >= 2' if k == 'reduction' else 'non-negative integer'}")
    return Pruner(**{k: v for k, v in raw.items()})


def metric_at(steps: np.ndarray, values: np.ndarray, at: str, mode: str) -> float | None:
    """The value a trial is judged by: its ``last`` point, its ``best`` one (by ``mode``), or the
    mean of its last N points; None when it logged nothing (finite values only)."""
    order = np.argsort(steps, kind="stable")
    v = np.asarray(values, dtype=float)[order]
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    if at == "last":
        return float(v[-1])
    if at == "best":
        return float(v.min() if mode == "min" else v.max())
    n = int(at.rsplit("_", 1)[1])
    return float(v[-n:].mean())


def to_template(value: Any) -> Any:
    """A sampled value as a template variable: numpy scalars become plain Python numbers, and
    floats are rounded to 10 significant digits so a value read back from the study renders (and
    hashes) exactly as it did when it was proposed."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.10g}")
    return value
