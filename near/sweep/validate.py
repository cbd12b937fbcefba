"""Validate jobs that run near's trainer against the hydra config tree, before anything is written.

Every job whose command runs ``near train ncsn|rl`` (also ``python -m near train ...``) is composed
with hydra's compose API against ``<workdir>/cfg``. Composition is cached by override *shape*: the
override keys, the values of config-group overrides (``task=motionNEAR`` picks a different tree)
and which values are placeholders; so the cost grows with the number of distinct shapes, not jobs.

Beyond what hydra checks itself, a ``+key`` / ``++key`` override (which hydra accepts for any
key) must have an existing parent node, so ``++train.params.config.near_confg.inference.x=1`` is
reported as a misspelt key instead of silently adding a new branch.

Isaac Gym tasks (``task=Humanoid*``) have no config here (Isaac Gym cannot be installed); their
jobs are skipped and reported, not failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from near.errors import ConfigError
from near.jobtable import JobSpec
from near.sweep.template import DUMMY_ROOT, dummy_slot, parse_call

ISAACGYM_TASK_PREFIX = "Humanoid"


@dataclass
class ValidationReport:
    """What validation did: jobs checked, distinct shapes composed, jobs skipped and why."""

    checked: int = 0
    shapes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> jobs
    not_trainer: int = 0

    def notes(self) -> list[str]:
        return [f"skipped hydra validation of {n} job(s): {why}" for why, n in self.skipped.items()]


def trainer_call(command: str) -> tuple[str, list[str]] | None:
    """``(kind, overrides)`` if ``command`` runs ``near train KIND OVERRIDES...``, else None: the
    words as the shell splits them (:func:`near.sweep.template.parse_call`), the overrides ending
    at the first operator, dispatch placeholders as dummy paths (what hydra would see)."""
    call = parse_call(command)
    if call is None:
        return None
    return _fill(call.kind), [_fill(w) for w in call.overrides]


def _fill(word) -> str:
    return "".join(p if isinstance(p, str) else dummy_slot(p) for p in word)


def _split(override: str) -> tuple[str, str, str]:
    """(prefix, key, value) of a hydra override: ``++a.b=1`` -> ('++', 'a.b', '1')."""
    m = re.match(r"^(\+\+|\+|~)?([^=]*)(?:=(.*))?$", override, re.S)
    assert m is not None
    return m.group(1) or "", m.group(2), m.group(3) or ""


def shape_of(kind: str, overrides: list[str], cfg_dir: Path) -> tuple:
    """The cache key: override keys, values of config-group overrides, placeholder-ness of values."""
    parts = []
    for o in overrides:
        prefix, key, value = _split(o)
        if "." not in key and (cfg_dir / key).is_dir():
            parts.append((prefix, key, value))
        elif DUMMY_ROOT in value:
            parts.append((prefix, key, "<placeholder>"))
        else:
            parts.append((prefix, key, None))
    return (str(cfg_dir), kind, tuple(parts))


class Validator:
    """Composes trainer commands with hydra, one composition per distinct shape."""

    def __init__(self, config_name: str = "config"):
        self.config_name = config_name
        self.cache: dict[tuple, str | None] = {}  # shape -> error message or None

    def check(self, kind: str, overrides: list[str], cfg_dir: Path) -> str | None:
        """None if the overrides compose, else the error message (cached by shape)."""
        key = shape_of(kind, overrides, cfg_dir)
        if key not in self.cache:
            self.cache[key] = self._compose(overrides, cfg_dir)
        return self.cache[key]

    def _compose(self, overrides: list[str], cfg_dir: Path) -> str | None:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf import OmegaConf

        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(cfg_dir), version_base=None):
                try:
                    compose(self.config_name, overrides=overrides)
                except Exception as err:  # hydra raises several types; all mean "does not compose"
                    return _hydra_message(err)
                plain = [o for o in overrides if not _split(o)[0].startswith("+")]
                try:
                    base = compose(self.config_name, overrides=plain)
                except Exception as err:
                    return _hydra_message(err)
                added: list[str] = []
                for o in overrides:
                    prefix, key, _ = _split(o)
                    if not prefix.startswith("+"):
                        continue
                    parent = key.rsplit(".", 1)[0] if "." in key else ""
                    if parent and not any(parent == a or parent.startswith(a + ".") for a in added):
                        node = OmegaConf.select(base, parent, default=_MISSING, throw_on_resolution_failure=False)
                        if node is _MISSING or not OmegaConf.is_dict(node):
                            missing = _first_missing(base, parent)
                            return (f"override {o!r}: key {missing!r} does not exist in the config "
                                    f"(misspelt? {prefix}{key} would add a new branch)")
                    added.append(key)
        finally:
            GlobalHydra.instance().clear()
        return None


_MISSING = object()


def _first_missing(cfg, dotted: str) -> str:
    from omegaconf import OmegaConf

    parts = dotted.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        node = OmegaConf.select(cfg, sub, default=_MISSING, throw_on_resolution_failure=False)
        if node is _MISSING or (i < len(parts) and not OmegaConf.is_dict(node)):
            return sub
    return dotted


def _hydra_message(err: Exception) -> str:
    msg = str(err).strip()
    cause = err.__cause__ or err.__context__
    if cause is not None and str(cause).strip() and str(cause).strip() not in msg:
        msg += f" ({str(cause).strip().splitlines()[0]})"
    return " ".join(msg.split())


def _task_of(overrides: list[str]) -> str | None:
    for o in overrides:
        prefix, key, value = _split(o)
        if key == "task":
            return value
    return None


def _shape_parts(overrides: Iterable[str], groups: frozenset[str]) -> tuple:
    """Override keys, the values of config-group overrides, and which values hold a dispatch path
    (a cheaper key than :func:`shape_of`, which looks at the config tree)."""
    parts = []
    for t in overrides:
        key, eq, value = t.partition("=")
        bare = key.lstrip("+~")
        if bare in groups:
            parts.append((key, value))
        elif DUMMY_ROOT in value:
            parts.append((key, "<placeholder>"))
        else:
            parts.append(key)
    return tuple(parts)


def validate_jobs(jobs: Iterable[JobSpec], spec_label: str, *, validator: Validator | None = None,
                  skip_stages: Iterable[tuple[str, str]] = ()) -> ValidationReport:
    """Compose every trainer job; ConfigError names the spec file, stage, grid point and override.

    ``skip_stages``: (job_id, reason) pairs not to compose (e.g. stages with ``validate: false``).
    A job from expansion carries its trainer call (kind and override words, read from the parsed
    template); any other job's command is parsed here. Hydra composes once per distinct shape.
    """
    validator = validator or Validator()
    skip = dict(skip_stages)
    report = ValidationReport()
    shapes_before = len(validator.cache)
    cfg_dirs: dict[str | None, tuple[Path, frozenset[str], bool]] = {}
    fast: dict[tuple, str | None] = {}  # fast shape -> problem (None: composes)
    for job in jobs:
        if skip and job.job_id in skip:
            report.skipped[skip[job.job_id]] = report.skipped.get(skip[job.job_id], 0) + 1
            continue
        info = cfg_dirs.get(job.workdir)
        if info is None:
            cfg_dir = Path(job.workdir or ".") / "cfg"
            groups = frozenset(d.name for d in cfg_dir.iterdir() if d.is_dir()) if cfg_dir.is_dir() else frozenset()
            info = cfg_dirs[job.workdir] = (cfg_dir, groups, (cfg_dir / "config.yaml").is_file())
        cfg_dir, groups, has_config = info
        # jobs from expansion carry their trainer call, read from the parsed template
        call = getattr(job, "call", _UNPARSED)
        if call is _UNPARSED:
            call = trainer_call(job.command)
        if call is None:
            report.not_trainer += 1
            continue
        fkey = (job.workdir, call[0], _shape_parts(call[1], groups))
        if fkey in fast:
            problem = fast[fkey]
            if problem == _SKIP:
                report.skipped[_isaac_note(cfg_dir)] = report.skipped.get(_isaac_note(cfg_dir), 0) + 1
                continue
            report.checked += 1
            if problem:
                raise _config_error(spec_label, job, cfg_dir, problem)
            continue
        kind, overrides = call[0], list(call[1])
        if not has_config:
            raise ConfigError(f"{spec_label}: stage {job.stage!r} at grid point {job.label}: runs near's trainer "
                              f"but {cfg_dir}/config.yaml does not exist (set the spec's workdir to the repo)")
        task = _task_of(overrides)
        if task and task.startswith(ISAACGYM_TASK_PREFIX) and not (cfg_dir / "task" / f"{task}.yaml").exists():
            report.skipped[_isaac_note(cfg_dir)] = report.skipped.get(_isaac_note(cfg_dir), 0) + 1
            fast[fkey] = _SKIP
            continue
        problem = validator.check(kind, overrides, cfg_dir)
        fast[fkey] = problem
        report.checked += 1
        if problem:
            raise _config_error(spec_label, job, cfg_dir, problem)
    report.shapes = len(validator.cache) - shapes_before
    return report


_SKIP = "<skip>"
_UNPARSED = object()


def _isaac_note(cfg_dir: Path) -> str:
    return (f"Isaac Gym tasks ({ISAACGYM_TASK_PREFIX}*) have no config in {cfg_dir}/task "
            "(Isaac Gym is not installed)")


def _config_error(spec_label: str, job: JobSpec, cfg_dir: Path, problem: str) -> ConfigError:
    return ConfigError(f"{spec_label}: stage {job.stage!r} at grid point {job.label}: "
                       f"does not compose with {cfg_dir}: {problem}")
