"""The typed settings of a trainer job, checked at add: unknown and ill-typed keys refused, and
what the job's stage reads (its identity for sharing).

Hydra composes once per *shape*: the config-group choices and the overrides hydra must read
itself (deletions, mappings, interpolations). Every other override sets one setting: it is
checked once per shape and value by converting the composed tree with it to typed
:class:`near.training.settings.Settings` (so an unknown key, a wrong type or a value out of range
in any job is refused with its key), and enters the job's identity as that setting's typed value.

A job's identity is its shape's settings as its stage reads them (:func:`stage_settings`) plus the
settings its overrides change that the stage reads: two jobs with equal identities compute the
same thing. This is exact because the config tree holds no interpolations (checked per shape; a
tree with some is composed per job).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from near.errors import ConfigError
from near.training.settings import (NOT_RESULTS, SettingsError, reusing_conversions, setting_path,
                                    settings_from_dict, stage_reads, stage_settings, value_at)

STAGES = ("ncsn", "rl")


class JobSettings(NamedTuple):
    """What a job's stage reads: ``identity`` (equal for jobs that compute the same thing), the
    override keys it does not read (``ignored``) and its ``motion`` (env type, motion file)."""

    identity: tuple
    ignored: tuple[str, ...]
    motion: tuple[str, str] | None = None


@dataclass(frozen=True)
class _Override:
    prefix: str  # '', '+', '++' or '~'
    key: str
    value: Any
    text: str
    in_shape: bool  # composed by hydra itself (group choice, deletion, mapping, interpolation)


@dataclass
class _Base:
    """A shape composed: its tree, settings (as plain containers) and each stage's identity."""

    tree: dict | None
    exact: bool
    problem: str | None
    settings: Any = None
    identities: dict | None = None
    index: int = 0
    motion: tuple[str, str] | None = None


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class SettingsChecker:
    """Typed settings of trainer jobs, composing once per shape (caches kept across calls)."""

    def __init__(self) -> None:
        self._parsed: dict[str, _Override | str] = {}
        self._bases: dict[tuple, _Base] = {}
        self._leaves: dict[tuple, _Leaf] = {}
        self._typed_cache: dict[tuple, tuple] = {}
        self._memo: dict[int, tuple] = {}
        self._dir: Path | None = None
        self._dir_name = ""
        self._dir_groups: frozenset[str] = frozenset()

    @property
    def shapes(self) -> int:
        """Distinct shapes composed so far."""
        return len(self._bases)

    def check(self, kind: str, overrides: list[str], cfg_dir: Path) -> JobSettings:
        """The settings of ``near train KIND OVERRIDES`` against ``cfg_dir``; ConfigError (a
        SettingsError for unknown or ill-typed keys) naming the override or key."""
        if kind not in STAGES:
            raise ConfigError(f"near train {kind}: expected one of {', '.join(STAGES)}")
        if cfg_dir is not self._dir:  # jobs come in runs of one workdir
            self._dir, self._dir_name = cfg_dir, str(cfg_dir)
            self._dir_groups = frozenset(d.name for d in cfg_dir.iterdir() if d.is_dir())
        groups = self._dir_groups
        parsed = self._parsed
        in_shape = []
        for o in overrides:
            p = parsed.get(o)
            if p is None:
                p = parsed[o] = _parse_override(o, groups)
            if p.__class__ is str:
                raise ConfigError(p)
            if p.in_shape:
                in_shape.append(o)
        shape = (self._dir_name, *in_shape)
        base = self._bases.get(shape)
        if base is None:
            base = self._bases[shape] = _compose_base(in_shape, cfg_dir)
            base.index = len(self._bases)
        if base.problem:
            raise ConfigError(base.problem)
        if not base.exact:
            return _full(overrides, cfg_dir, kind, [parsed[o] for o in overrides])
        identity = base.identities.get(kind)
        if identity is None:
            identity = base.identities[kind] = _canon(stage_settings(self._settings(base), kind))
            base.motion = _motion(base.settings)
        leaves, index = self._leaves, base.index
        found = []
        aliases = []
        for o in overrides:
            leaf = leaves.get((index, kind, o))
            if leaf is None:
                p = parsed[o]
                if p.in_shape:
                    continue
                leaf = leaves[(index, kind, o)] = self._leaf(base, kind, p)
            # the top-level aliases (num_envs, max_iterations) win over the settings they write
            (aliases if leaf.alias else found).append(leaf)
        if aliases:
            found += aliases
        changed: dict[str, str] = {}
        motion = base.motion
        ignored = ()
        for leaf in found:
            if leaf.motion is not None:
                motion = leaf.motion
            if leaf.reads:
                changed[leaf.path] = leaf.value
                if not leaf.differs:
                    del changed[leaf.path]
            elif leaf.ignored:
                ignored += (leaf.key,)
        return JobSettings((identity, tuple(sorted(changed.items())) if len(changed) > 1 else tuple(changed.items())),
                           ignored, motion)

    def _settings(self, base: _Base) -> Any:
        if base.settings is None:
            with reusing_conversions(self._memo):
                base.settings = settings_from_dict(base.tree)
        return base.settings

    def _leaf(self, base: _Base, kind: str, o: _Override) -> "_Leaf":
        """What one override means for one stage: its setting, whether that differs from the
        shape's own value, whether the stage reads it."""
        path, value, differs, motion = self._typed(base, o)
        reads = stage_reads(kind, o.key)
        return _Leaf(o.key, path, value, differs, reads, not reads and o.key not in NOT_RESULTS, path != o.key,
                     motion)

    def _typed(self, base: _Base, o: _Override) -> tuple[str, str, bool, tuple[str, str] | None]:
        """The setting one override writes, checked by converting the shape's tree with it (once
        per shape and override; the branches it leaves alone are not converted again): its path,
        canonical typed value, whether that differs from the shape's own, and the motion it names."""
        key = (base.index, o.text)
        hit = self._typed_cache.get(key)
        if hit is None:
            if o.prefix == "+" and _lookup(base.tree, o.key) is not _ABSENT:
                raise ConfigError(f"override {o.text!r}: {o.key} exists already (+ adds a new key; ++ sets one)")
            before = self._settings(base)
            with reusing_conversions(self._memo):
                after = settings_from_dict(_with_values(base.tree, [(o.key, o.value)]))
            path = setting_path(o.key)
            value = _value(after, path)
            hit = self._typed_cache[key] = (path, value, value != _value(before, path),
                                            _motion(after) if path == _MOTION_FILE else None)
        return hit


def _value(settings: Any, path: str) -> str:
    try:
        return _canon(value_at(settings, path))
    except KeyError:
        return "<absent>"


@dataclass(frozen=True)
class _Leaf:
    key: str
    path: str
    value: str
    differs: bool
    reads: bool
    ignored: bool
    alias: bool
    motion: tuple[str, str] | None


_ABSENT = object()


def _lookup(tree: Any, dotted: str) -> Any:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _compose_base(overrides: list[str], cfg_dir: Path) -> _Base:
    tree, exact, problem = _compose(overrides, cfg_dir)
    return _Base(tree, exact, problem, identities={})


def _full(overrides: list[str], cfg_dir: Path, kind: str, parsed: list[_Override]) -> JobSettings:
    """The settings of a job whose tree holds interpolations: composed on its own."""
    tree, _, problem = _compose(overrides, cfg_dir)
    if problem:
        raise ConfigError(problem)
    settings = settings_from_dict(tree)
    ignored = tuple(p.key for p in parsed if not p.in_shape and p.key not in NOT_RESULTS
                    and not stage_reads(kind, p.key))
    return JobSettings((_canon(stage_settings(settings, kind)), ()), ignored, _motion(settings))


_MOTION_FILE = "task.env.motion_file"


def _motion(settings: Any) -> tuple[str, str] | None:
    """(env type, motion file) of typed settings (None: the env reads no motion file)."""
    file = getattr(settings.task.env, "motion_file", None)
    return None if file is None else (settings.task.env_type, file)


def _parse_override(text: str, groups: frozenset[str]) -> _Override | str:
    """One override as hydra reads it, or the error message."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        o = OverridesParser.create().parse_override(text)
    except HydraException as err:
        return f"override {text!r}: {' '.join(str(err).split())}"
    prefix = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~"}.get(o.type.name, "")
    key = o.key_or_group
    if o.is_sweep_override():
        return f"override {text!r}: a sweep over values; give one value (sweeps are near's axes)"
    value = None if prefix == "~" else o.value()
    in_shape = (key.split("@")[0] in groups or prefix == "~" or isinstance(value, dict)
                or (isinstance(value, str) and "${" in value) or o.package is not None)
    return _Override(prefix, key, value, text, in_shape)


def _compose(overrides: list[str], cfg_dir: Path) -> tuple[dict | None, bool, str | None]:
    """(resolved tree, whether it holds no interpolations, None) or (None, False, error message)."""
    from omegaconf import OmegaConf

    from near.training.config import compose
    from near.training.settings import permissive

    try:
        cfg = compose(permissive(overrides, frozenset(d.name for d in cfg_dir.iterdir() if d.is_dir())),
                      str(cfg_dir))
    except ConfigError as err:
        return None, False, _without_prefix(str(err), overrides, cfg_dir)
    raw = OmegaConf.to_container(cfg, resolve=False)
    return OmegaConf.to_container(cfg, resolve=True), not _has_interpolation(raw), None


def _without_prefix(message: str, overrides: list[str], cfg_dir: Path) -> str:
    # compose names every override; a job's message names the job and cfg/ already
    head = f"overrides {' '.join(overrides)!r} do not compose with {cfg_dir}: "
    return message[len(head):] if message.startswith(head) else message


def _has_interpolation(node: Any) -> bool:
    if isinstance(node, dict):
        return any(_has_interpolation(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_interpolation(v) for v in node)
    return isinstance(node, str) and "${" in node


def _with_values(tree: dict, values: list[tuple[str, Any]]) -> dict:
    """``tree`` with each dotted key set to its value; only the dicts on the way are copied."""
    root = dict(tree)
    copied = {id(root)}
    for key, value in values:
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
            elif id(child) not in copied:
                child = dict(child)
            copied.add(id(child))
            node[part] = child
            node = child
        node[parts[-1]] = value
    return root


__all__ = ["JobSettings", "SettingsChecker", "SettingsError", "STAGES"]
