"""Plotting specs (``plotting/*.yaml``): load, validate, and derive a default from the data.

Every mapping is checked against a fixed set of keys: an unknown key is a SpecError naming the
file and the key's path (``figures[1].hue2``), so a typo never silently changes a figure.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from near.errors import SpecError

# key -> (allowed types, default). None as default means "optional, absent".
TOP_KEYS: dict[str, tuple[tuple, Any]] = {
    "sweep": ((str,), None),
    "title": ((str,), None),
    "select": ((dict,), {}),
    "tags": ((dict, list), None),
    "x_label": ((str,), "Training step"),
    "grid": ((dict,), {}),
    "smoothing": ((int, float, type(None)), 0.0),
    "statistic": ((str,), "mean"),
    "ci": ((dict,), {}),
    "palette": ((dict,), {}),
    "figures": ((list,), None),
    "tables": ((list,), None),
    "formats": ((list,), ["pdf", "png"]),
    "runs": ((dict,), {}),
    # "near": NEAR's own plotter (mean +- 1 std across runs, no smoothing, expert line, last value)
    "style": ((str,), "default"),
    "page": ((bool,), True),
}
# Runs near did not launch: where they are, how their directory names read, which config keys to show.
RUNS_KEYS = {"root": ((str,), None), "pattern": ((str,), None), "config": ((list, dict), None)}
STYLES = ("default", "near")
TAG_KEYS = {"label": ((str,), None), "expert": ((int, float, dict), None), "random": ((int, float, dict), None),
            "optional": ((bool,), False),
            "higher_is_better": ((bool,), True), "smoothing": ((int, float), None)}
GRID_KEYS = {"points": ((int, type(None)), 200), "truncate": ((bool,), False)}
CI_KEYS = {"level": ((float,), 0.95), "n_boot": ((int,), 1000), "seed": ((int,), 0)}
FIGURE_KEYS = {
    "kind": ((str,), "curves"), "name": ((str,), None), "title": ((str,), None),
    "tags": ((list,), None), "hue": ((str,), "algorithm"), "facet": ((str, type(None)), "motion"),
    "order": ((list,), None), "select": ((dict,), {}), "col_wrap": ((int,), 4),
    "annotate_end": ((bool,), True), "expert": ((bool,), True), "legend": ((str,), "below"),
    "size": ((list,), [4.2, 3.2]), "sharey": ((bool,), False),
    # landscape figures
    "extent": ((list,), [0.0, 1.0, 0.0, 1.0]), "sigma_levels": ((list,), [0, 4, 9]), "resolution": ((int,), 120),
    "model": ((str,), "ncsn"),
    # aggregate / profile / improvement figures: statistics of final scores across tasks (facet values)
    "metrics": ((list,), ["iqm", "mean", "median"]), "pairs": ((list,), None), "window": ((int,), 10),
    "taus": ((int,), 41),
}
FIGURE_KINDS = {"curves", "ablation", "landscape", "aggregate", "profile", "improvement"}
AGGREGATE_KINDS = {"aggregate", "profile", "improvement"}
TABLE_KEYS = {"kind": ((str,), "final"), "name": ((str,), "final"), "by": ((list,), None), "tags": ((list,), None),
              "window": ((int,), 10), "select": ((dict,), {}), "digits": ((int,), 2),
              "task": ((str, type(None)), "motion"), "metrics": ((list,), ["iqm", "mean", "median"]),
              "pairs": ((list,), None)}
TABLE_KINDS = {"final", "aggregate", "improvement"}


def _check(obj: dict, allowed: dict, where: str, file: str) -> dict:
    """Check keys and types of one mapping; return it with defaults filled in."""
    if not isinstance(obj, dict):
        raise SpecError(f"{file}: {where or 'top level'} must be a mapping, got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in allowed:
            raise SpecError(f"{file}: unknown key '{path}' (allowed: {', '.join(sorted(allowed))})")
        types, _ = allowed[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = "/".join(t.__name__ if t is not type(None) else "null" for t in types)
            raise SpecError(f"{file}: key '{path}' must be {names}, got {type(value).__name__} {value!r}")
        out[key] = value
    for key, (_, default) in allowed.items():
        out.setdefault(key, copy.deepcopy(default))
    return out


def validate(raw: Any, file: str = "<spec>") -> dict:
    """Validated spec with defaults; raises SpecError naming `file` and the offending key."""
    spec = _check(raw if raw is not None else {}, TOP_KEYS, "", file)
    tags = spec["tags"]
    if isinstance(tags, list):
        tags = {str(t): {} for t in tags}
    if tags is not None:
        spec["tags"] = {str(t): _check(v or {}, TAG_KEYS, f"tags.{t}", file) for t, v in tags.items()}
        for t, v in spec["tags"].items():
            v["label"] = v["label"] or t
    spec["grid"] = _check(spec["grid"], GRID_KEYS, "grid", file)
    spec["ci"] = _check(spec["ci"], CI_KEYS, "ci", file)
    if not 0.0 < spec["ci"]["level"] < 1.0:
        raise SpecError(f"{file}: key 'ci.level' must be in (0, 1), got {spec['ci']['level']}")
    if spec["statistic"] not in ("mean", "iqm"):
        raise SpecError(f"{file}: key 'statistic' must be 'mean' or 'iqm', got {spec['statistic']!r}")
    sm = spec["smoothing"] or 0.0
    if not 0.0 <= sm < 1.0:
        raise SpecError(f"{file}: key 'smoothing' must be an EMA weight in [0, 1), got {sm}")
    spec["smoothing"] = float(sm)
    for k, v in spec["select"].items():
        if not isinstance(v, (str, int, float, list)):
            raise SpecError(f"{file}: key 'select.{k}' must be a value or a list of values")
    if spec["figures"] is not None:
        figs = []
        for i, f in enumerate(spec["figures"]):
            f = _check(f, FIGURE_KEYS, f"figures[{i}]", file)
            if f["kind"] not in FIGURE_KINDS:
                raise SpecError(f"{file}: key 'figures[{i}].kind' must be one of {sorted(FIGURE_KINDS)}, got {f['kind']!r}")
            f["name"] = f["name"] or f"{f['kind']}{i}"
            figs.append(f)
        names = [f["name"] for f in figs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SpecError(f"{file}: figure names must be unique, repeated: {sorted(dup)}")
        spec["figures"] = figs
    if spec["tables"] is not None:
        spec["tables"] = [_check(t, TABLE_KEYS, f"tables[{i}]", file) for i, t in enumerate(spec["tables"])]
        for i, t in enumerate(spec["tables"]):
            if t["kind"] not in TABLE_KINDS:
                raise SpecError(f"{file}: key 'tables[{i}].kind' must be one of {sorted(TABLE_KINDS)}, got {t['kind']!r}")
            _check_aggregate(t, f"tables[{i}]", file)
    for i, f in enumerate(spec["figures"] or []):
        _check_aggregate(f, f"figures[{i}]", file)
    spec["runs"] = _check(spec["runs"], RUNS_KEYS, "runs", file)
    if spec["style"] not in STYLES:
        raise SpecError(f"{file}: key 'style' must be one of {', '.join(STYLES)}, got {spec['style']!r}")
    for fmt in spec["formats"]:
        if fmt not in ("pdf", "png", "svg"):
            raise SpecError(f"{file}: key 'formats' may hold pdf, png, svg; got {fmt!r}")
    return spec


def _check_aggregate(item: dict, where: str, file: str) -> None:
    """Metrics and pairs of an aggregate figure or table name known metrics and [x, y] pairs."""
    from near.report.aggregates import METRICS

    for m in item.get("metrics") or []:
        if m not in METRICS:
            raise SpecError(f"{file}: key '{where}.metrics' holds {m!r}; known: {', '.join(METRICS)}")
    for pair in item.get("pairs") or []:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise SpecError(f"{file}: key '{where}.pairs' must be a list of [x, y] pairs, got {pair!r}")
    if item.get("kind") == "improvement" and not item.get("pairs"):
        raise SpecError(f"{file}: {where} (kind improvement) needs 'pairs', e.g. [[NEAR, AMP]]")


def load(path: Path) -> dict:
    """Read and validate one spec file."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML ({err})") from None
    spec = validate(raw, str(path))
    spec["_file"] = str(path)
    return spec


def specs_for_sweep(plotting_dir: Path, sweep: str) -> list[Path]:
    """Every spec in `plotting_dir` whose ``sweep:`` equals `sweep`, by file name."""
    import yaml

    out = []
    for path in sorted(Path(plotting_dir).glob("*.yaml")) if Path(plotting_dir).is_dir() else []:
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(raw, dict) and raw.get("sweep") == sweep:
            out.append(path)
    return out


def find_for_sweep(plotting_dir: Path, sweep: str) -> Path | None:
    """The spec in `plotting_dir` whose ``sweep:`` equals `sweep` (first by file name), if any."""
    found = specs_for_sweep(plotting_dir, sweep)
    return found[0] if found else None


def default_spec(tags: list[str], columns: list[str], sweep: str | None = None) -> dict:
    """Spec derived from the data: every scalar tag, one curve per algorithm, a facet per motion."""
    hue = "algorithm" if "algorithm" in columns else "run"
    facet = "motion" if "motion" in columns else None
    by = [c for c in ("algorithm", "motion", "ablation") if c in columns] or ["run"]
    raw = {
        "tags": {t: {} for t in tags},
        "figures": [{"kind": "curves", "name": "curves", "hue": hue, "facet": facet}],
        "tables": [{"name": "final", "by": by}],
    }
    if "stage" in columns:
        raw["select"] = {}
    spec = validate(raw, "<default spec>")
    spec["sweep"] = sweep
    spec["_file"] = "<default spec derived from the data>"
    return spec
