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
from typing import Any

from near.errors import ConfigError
from near.training.settings import (NOT_RESULTS, SettingsError, settings_from_dict, setting_path, stage_reads,
                                    stage_settings, to_dict)

STAGES = ("ncsn", "rl")


@dataclass(frozen=True)
class JobSettings:
    """What a job's stage reads: ``identity`` (equal for jobs that compute the same thing) and the
    override keys it does not read (``ignored``)."""

    identity: tuple
    ignored: tuple[str, ...]
    motion: tuple[str, str] | None = None  # (env type, task.env.motion_file)


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
    values: dict | None = None
    identities: dict | None = None


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class SettingsChecker:
    """Typed settings of trainer jobs, composing once per shape (caches kept across calls)."""

    def __init__(self) -> None:
        self._parsed: dict[str, _Override | str] = {}
        self._bases: dict[tuple, _Base] = {}
        self._leaves: dict[tuple, tuple[str, str, str | None]] = {}
        self._groups: dict[Path, frozenset[str]] = {}

    @property
    def shapes(self) -> int:
        """Distinct shapes composed so far."""
        return len(self._bases)

    def check(self, kind: str, overrides: list[str], cfg_dir: Path) -> JobSettings:
        """The settings of ``near train KIND OVERRIDES`` against ``cfg_dir``; ConfigError (a
        SettingsError for unknown or ill-typed keys) naming the override or key."""
        if kind not in STAGES:
            raise ConfigError(f"near train {kind}: expected one of {', '.join(STAGES)}")
        groups = self._groups.get(cfg_dir)
        if groups is None:
            groups = self._groups[cfg_dir] = frozenset(d.name for d in cfg_dir.iterdir() if d.is_dir())
        parsed = [self._parse(o, groups) for o in overrides]
        shape = (str(cfg_dir), tuple(p.text for p in parsed if p.in_shape))
        base = self._bases.get(shape)
        if base is None:
            base = self._bases[shape] = _compose_base([p.text for p in parsed if p.in_shape], cfg_dir)
        if base.problem:
            raise ConfigError(base.problem)
        ignored = tuple(dict.fromkeys(p.key for p in parsed if not p.in_shape and p.key not in NOT_RESULTS
                                      and not stage_reads(kind, p.key)))
        if not base.exact:
            return JobSettings(*_full(overrides, cfg_dir, kind), ignored=ignored)
        identity = base.identities.get(kind)
        if identity is None:
            identity = base.identities[kind] = _canon(stage_settings(settings_from_dict(base.tree), kind))
        changed: dict[str, str] = {}
        motion_file = None
        # the top-level aliases (num_envs, max_iterations) win over the settings they write
        for p in sorted((p for p in parsed if not p.in_shape), key=lambda p: setting_path(p.key) != p.key):
            path, value, differs = self._leaf(shape, base, p)
            if path == _MOTION_FILE:
                motion_file = value
            if differs is None:
                changed.pop(path, None)
            elif stage_reads(kind, p.key):
                changed[path] = value
        if base.values is None:
            base.values = to_dict(settings_from_dict(base.tree))
        return JobSettings((identity, tuple(sorted(changed.items()))), ignored, _motion(base.values, motion_file))

    def _parse(self, text: str, groups: frozenset[str]) -> _Override:
        hit = self._parsed.get(text)
        if hit is None:
            hit = self._parsed[text] = _parse_override(text, groups)
        if isinstance(hit, str):
            raise ConfigError(hit)
        return hit

    def _leaf(self, shape: tuple, base: _Base, o: _Override) -> tuple[str, str, str | None]:
        """(setting path, canonical typed value, None if it equals the shape's own value), checked
        by converting the shape's tree with this one override (once per shape and override)."""
        key = (shape, o.text)
        hit = self._leaves.get(key)
        if hit is None:
            if o.prefix == "+" and _lookup(base.tree, o.key) is not _ABSENT:
                raise ConfigError(f"override {o.text!r}: {o.key} exists already (+ adds a new key; ++ sets one)")
            values = to_dict(settings_from_dict(_with_values(base.tree, [(o.key, o.value)])))
            if base.values is None:
                base.values = to_dict(settings_from_dict(base.tree))
            path = setting_path(o.key)
            value, before = _lookup(values, path), _lookup(base.values, path)
            value = "<absent>" if value is _ABSENT else _canon(value)
            before = "<absent>" if before is _ABSENT else _canon(before)
            hit = self._leaves[key] = (path, value, None if value == before else value)
        return hit


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


def _full(overrides: list[str], cfg_dir: Path, kind: str) -> tuple[tuple, tuple[str, str] | None]:
    """Identity and motion of a job whose tree holds interpolations: composed on its own."""
    tree, _, problem = _compose(overrides, cfg_dir)
    if problem:
        raise ConfigError(problem)
    settings = settings_from_dict(tree)
    return (_canon(stage_settings(settings, kind)), ()), _motion(to_dict(settings), None)


_MOTION_FILE = "task.env.motion_file"


def _motion(values: dict, changed: str | None) -> tuple[str, str] | None:
    """(env type, motion file) of a job: its own override (canonical JSON) or its shape's value."""
    if changed is not None:
        return values["task"]["env_type"], json.loads(changed)
    file = _lookup(values, _MOTION_FILE)
    return None if file is _ABSENT else (values["task"]["env_type"], file)


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
