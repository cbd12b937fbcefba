"""Metadata of runs near did not launch: from their directory names and their own config files.

A *run pattern* is a format-style template over a run directory's path relative to the report's
root: ``{algorithm}_{motion}_{seed}`` turns ``HumanoidNEAR_walk_42`` into algorithm=HumanoidNEAR,
motion=walk, seed=42. Literal text matches literally, ``{name}`` matches one or more characters
other than ``/`` (as few as possible, left to right), ``{name:d}`` only digits, and ``{_}`` anything,
``/`` included (``{_}/{algorithm}_{motion}_{seed:d}`` finds runs at any depth). An event file's run
directory is its shallowest ancestor under the root that the whole pattern matches.

Config files a run may carry (read only when present): hydra's ``.hydra/overrides.yaml`` (every
override becomes a column, ``++train.params.seed=3`` -> ``train.params.seed``), hydra's
``.hydra/config.yaml`` and rl-games/IsaacGymEnvs' ``config.yaml`` (only the dotted keys asked for,
e.g. ``task.env.motion_file``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from near.errors import SpecError

_FIELD = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class RunPattern:
    """A compiled run pattern: its text, the field names it sets, and the regex it became."""

    text: str
    fields: tuple[str, ...]
    regex: re.Pattern

    def match(self, rel_dir: str) -> dict[str, str] | None:
        """Field values when the whole of `rel_dir` (``/``-separated) matches, else None."""
        m = self.regex.fullmatch(rel_dir)
        return None if m is None else {f: m.group(f) for f in self.fields}


def compile_pattern(text: str, where: str = "--pattern") -> RunPattern:
    """Translate a run pattern into a regex; SpecError (naming `where`) for a malformed one."""
    parts, fields, pos = [], [], 0
    for m in _FIELD.finditer(text):
        literal = text[pos : m.start()]
        if "{" in literal or "}" in literal:
            raise SpecError(f"{where}: unbalanced brace in run pattern {text!r}")
        parts.append(re.escape(literal))
        name, _, fmt = m.group(1).partition(":")
        if name == "_":
            parts.append(".*?")
        elif not name.isidentifier():
            raise SpecError(f"{where}: field {{{m.group(1)}}} of run pattern {text!r} must be a name "
                            "(letters, digits, _), optionally with :d or :REGEX, or {_}")
        elif name in fields:
            parts.append(f"(?P={name})")
        else:
            body = "[0-9]+" if fmt == "d" else "[^/]+?" if fmt == "" else f"(?:{fmt})"
            try:
                re.compile(body)
            except re.error as err:
                raise SpecError(f"{where}: field {{{m.group(1)}}} of {text!r}: not a valid regex ({err})") from None
            fields.append(name)
            parts.append(f"(?P<{name}>{body})")
        pos = m.end()
    tail = text[pos:]
    if "{" in tail or "}" in tail:
        raise SpecError(f"{where}: unbalanced brace in run pattern {text!r}")
    parts.append(re.escape(tail))
    if not fields:
        raise SpecError(f"{where}: run pattern {text!r} names no field (e.g. '{{algorithm}}_{{motion}}_{{seed}}')")
    return RunPattern(text, tuple(fields), re.compile("".join(parts).replace("\\/", "/")))


def run_dir_of(rel_file: str, pattern: RunPattern | list[RunPattern] | None
               ) -> tuple[str, dict[str, str]] | None:
    """(run dir relative to the root, field values) of one event file given relative to the root.

    Without a pattern the run dir is the folder holding the file's ``summaries`` folder (NEAR's and
    rl-games' layout), else the file's own folder. With patterns: the shallowest ancestor the first
    matching pattern matches, or None.
    """
    parts = rel_file.split("/")[:-1]
    patterns = [pattern] if isinstance(pattern, RunPattern) else list(pattern or [])
    if not patterns:
        cut = len(parts) - 1 - parts[::-1].index("summaries") if "summaries" in parts else len(parts)
        return "/".join(parts[:cut]) or ".", {}
    for pat in patterns:
        for depth in range(1, len(parts) + 1):
            rel = "/".join(parts[:depth])
            values = pat.match(rel)
            if values is not None:
                return rel, values
    return None


def overrides_columns(overrides: list) -> dict[str, str]:
    """Hydra override strings (``task=X``, ``++a.b=1``, ``~c``) -> {key: value}; deletions are skipped."""
    out = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+")
        if sep and key and not key.startswith("~"):
            out[key] = value
    return out


def lookup(config: dict, dotted: str):
    """Value at a dotted key of a nested mapping (``task.env.motion_file``), or None."""
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if not isinstance(node, (dict, list)) else str(node)


def resolve(config: dict, dotted: str) -> tuple[str | None, str | None]:
    """(value, None) of a dotted key whose value holds OmegaConf interpolations (``${task.name}``, as
    hydra saves a run's config unresolved), or (None, why) when it cannot be resolved here. The
    resolvers NEAR's (IsaacGymEnvs') configs use (``resolve_default``, ``eq``, ``contains``, ``if``)
    are always registered first, so a value never depends on what else ran in this process; a
    resolver another program registers is unknown here (None, why)."""
    from omegaconf import OmegaConf

    from near.training.config import register_resolvers

    register_resolvers()
    try:
        value = OmegaConf.select(OmegaConf.create(config), dotted, throw_on_resolution_failure=True)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
    except Exception as err:  # any resolution failure: the key has no value here, said so by the caller
        return None, str(err).splitlines()[0] if str(err) else type(err).__name__
    if value is None:
        return None, "it resolves to nothing"
    return str(value), None


DEFAULT_CONFIG_FILES = (".hydra/config.yaml", "config.yaml", "ncsn_config.yaml", "configs/{name}/run_config.yaml")


def config_paths(run_dir: Path, root: Path, templates: list[str]) -> list[Path]:
    """Existing config files of a run: each template (``{name}`` = the run dir's name; globs allowed)
    relative to the run dir, else to the nearest folder above it up to `root`; in template order."""
    out = []
    root = Path(root).resolve()
    for template in templates:
        rel = template.replace("{name}", run_dir.name)
        here = Path(run_dir).resolve()
        while True:
            hits = sorted(here.glob(rel)) if any(c in rel for c in "*?[") else [here / rel]
            hits = [h for h in hits if h.is_file()]
            if hits:
                out.append(hits[0])
                break
            if here == root or root not in here.parents:
                break
            here = here.parent
    return out


def read_run_config(run_dir: Path, keys: dict[str, str], root: Path | None = None,
                    config_files: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """Columns from a run's own config files: every hydra override, and `keys` {column: dotted key}
    from the first config file (`config_files`, then the defaults) that holds each. Returns (columns,
    warnings); absent files are fine."""
    import yaml

    cols: dict[str, str] = {}
    warnings: list[str] = []

    def load(path: Path):
        try:
            return yaml.safe_load(path.read_text())
        except OSError:
            return None
        except yaml.YAMLError as err:
            warnings.append(f"{path}: not valid YAML ({str(err).splitlines()[0]}); its metadata is skipped")
            return None

    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        raw = load(overrides)
        if isinstance(raw, list):
            cols.update(overrides_columns(raw))
    if keys:
        templates = list(config_files or []) + [t for t in DEFAULT_CONFIG_FILES if t not in (config_files or [])]
        for path in config_paths(run_dir, root or run_dir, templates):
            raw = load(path)
            if not isinstance(raw, dict):
                continue
            for col, key in keys.items():
                if col in cols:
                    continue
                value = lookup(raw, key)
                if isinstance(value, str) and "${" in value:
                    value, problem = resolve(raw, key)
                    if problem:
                        warnings.append(f"{path}: key '{key}' is {lookup(raw, key)!r}, which cannot be resolved "
                                        f"outside its program ({problem}); no '{col}' from it")
                if value is not None:
                    cols[col] = str(value)
            if all(c in cols for c in keys):
                break
    return cols, warnings


MOTIONS_FILE = "motions.json"  # written by near's trainers: the motion files a run read, by content


def motions_label(run_dir: Path) -> str | None:
    """What a run trained on, from its ``motions.json``: each motion file's name and the first 8
    hex digits of its sha256 (``amp_humanoid_walk.yaml@1a2b3c4d``), or ``walk (synthetic)``;
    None when the run has no such file (or it is not near's list)."""
    import json

    try:
        entries = json.loads((Path(run_dir) / MOTIONS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entries, list):
        return None
    parts = []
    for e in entries:
        if not isinstance(e, dict):
            return None
        name = Path(str(e.get("file") or e.get("motion_file") or "?")).name
        digest = e.get("sha256")
        parts.append(f"{name}@{str(digest)[:8]}" if digest else f"{name} (synthetic)")
    return " + ".join(parts) or None


def bare_runs(paths: list[str], root: Path, patterns: list[RunPattern] | RunPattern | None,
              config_keys: dict[str, str], config_files: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Run and metadata of event files that belong to no job: one row per file that has a run
    (columns path, run, the patterns' fields, config columns), and warnings for files no pattern
    matches (they are left out) and unreadable configs."""
    root = Path(root).resolve()
    patterns = [patterns] if isinstance(patterns, RunPattern) else list(patterns or [])
    rows, unmatched, warnings = [], [], []
    configs: dict[str, dict[str, str]] = {}
    for p in paths:
        rel = os.path.relpath(os.path.abspath(p), root).replace(os.sep, "/")
        if rel.startswith("../"):
            rel = os.path.abspath(p).lstrip("/")
        found = run_dir_of(rel, patterns)
        if found is None:
            unmatched.append(rel)
            continue
        run, values = found
        if run not in configs:
            configs[run], warn = read_run_config(root / run, config_keys, root, config_files)
            warnings += warn
        rows.append({"path": p, "run": run, **configs[run], **values})
    if unmatched:
        shown = ", ".join(unmatched[:3]) + (f", ... ({len(unmatched)} in all)" if len(unmatched) > 3 else "")
        texts = " or ".join(repr(p.text) for p in patterns)
        warnings.append(f"{root}: {len(unmatched)} event file(s) match no run dir of pattern {texts} and are "
                        f"left out: {shown}")
    frame = pd.DataFrame(rows) if rows else pd.DataFrame({"path": [], "run": []})
    return frame.astype(object), warnings


def parse_config_keys(items: list[str] | dict | None, where: str = "--config") -> dict[str, str]:
    """``['task.env.motion_file', 'motion=task.env.motion_file']`` (or a {column: key} mapping) ->
    {column: dotted key}; a bare key is its own column name."""
    if items is None:
        return {}
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    out = {}
    for item in items:
        col, sep, key = str(item).partition("=")
        if not sep:
            col, key = item, item
        if not col or not key:
            raise SpecError(f"{where}: {item!r}: expected KEY or COLUMN=KEY (e.g. motion=task.env.motion_file)")
        out[col] = key
    return out
