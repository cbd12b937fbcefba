"""Plotting specs (``plotting/*.yaml``): load, validate, and derive a default from the data.

Every mapping is checked against a fixed set of keys: an unknown key is a SpecError naming the
file and the key's path (``figures[1].hue2``), so a typo never silently changes a figure.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
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
    # fields that split curves (hue), then panels, then rows, for every figure that names none
    "group_by": ((list, str), None),
    # curves are drawn from at most this many points per run (statistics use every point)
    "draw_points": ((int,), 400),
}
# Runs near did not launch: where they are, how their directory names read, which config keys to show.
RUNS_KEYS = {"root": ((str,), None), "pattern": ((str, list), None), "config": ((list, dict), None),
             "config_files": ((list, str), None)}
STYLES = ("default", "near")
DIRECTIONS = ("higher", "lower", "target")
TAG_KEYS = {"label": ((str,), None), "expert": ((int, float, dict), None), "random": ((int, float, dict), None),
            "optional": ((bool,), False), "direction": ((str, type(None)), None),
            "higher_is_better": ((bool,), None), "smoothing": ((int, float), None),
            # false: each group optimises its own version (e.g. each algorithm's own reward), so groups
            # get panels of their own instead of sharing one axis
            "comparable": ((bool, type(None)), None)}
GRID_KEYS = {"points": ((int, type(None)), 200), "truncate": ((bool,), False)}
CI_KEYS = {"level": ((float,), 0.95), "n_boot": ((int,), 1000), "seed": ((int,), 0)}
#: where a curve figure's legend goes: under the panels, or nowhere (the captions name the curves)
LEGENDS = ("below", "none")
FIGURE_KEYS = {
    "kind": ((str,), "curves"), "name": ((str,), None), "title": ((str,), None), "caption": ((str,), None),
    "tags": ((list,), None), "hue": ((str,), "algorithm"), "facet": ((str, type(None)), "motion"),
    "rows": ((str, type(None)), None), "group_by": ((list, str), None),
    "order": ((list,), None), "select": ((dict,), {}), "col_wrap": ((int,), 4),
    "annotate_end": ((bool,), True), "expert": ((bool,), True), "legend": ((str,), "below"),
    "size": ((list,), [4.2, 3.2]), "sharey": ((bool,), False), "min_runs": ((int,), 1),
    # landscape figures
    "extent": ((list,), [0.0, 1.0, 0.0, 1.0]), "sigma_levels": ((list,), [0, 4, 9]), "resolution": ((int,), 120),
    "model": ((str,), "ncsn"),
    # aggregate / profile / improvement figures: statistics of final scores across tasks (facet values)
    "metrics": ((list,), ["iqm", "mean", "median"]), "pairs": ((list,), None), "window": ((int,), 10),
    "taus": ((int,), 41),
}
TABLE_KEYS = {"kind": ((str,), "final"), "name": ((str,), "final"), "caption": ((str,), None),
              "by": ((list,), None), "tags": ((list,), None),
              "window": ((int,), 10), "select": ((dict,), {}), "digits": ((int,), 2),
              "task": ((str, type(None)), "motion"), "metrics": ((list,), ["iqm", "mean", "median"]),
              "pairs": ((list,), None)}
# Tags near's own training core logs, with the direction that is better, so a figure says it unasked.
KNOWN_DIRECTIONS = {"dtw_error": "lower", "sparc": "target", "root_jerk": "lower", "loss": "lower",
                    "rewards": "higher", "episode_lengths": "higher"}


@dataclass
class TagSpec:
    """One metric: its label, references and which way is better."""

    label: str
    expert: float | dict | None = None
    random: float | dict | None = None
    optional: bool = False
    direction: str | None = None  # higher | lower | target (closer to the expert value) | None: not declared
    smoothing: float | None = None
    comparable: bool = True

    def reference(self, which: str, task: str | None) -> float | None:
        """The `expert` or `random` value of this tag for one task (facet value); None when not given."""
        ref = getattr(self, which)
        if isinstance(ref, dict):
            val = ref.get(task) if task is not None else None
            return float(val) if val is not None else None
        return None if ref is None else float(ref)

    @property
    def better(self) -> str:
        """Short words for titles and axis labels: 'lower is better', 'closer to expert is better', ''."""
        return {"lower": "lower is better", "higher": "higher is better",
                "target": "closer to expert is better"}.get(self.direction or "", "")


@dataclass
class FigureSpec:
    """One figure (or family of figures, one per tag) of a kind from the registry."""

    kind: str
    name: str
    title: str | None = None
    caption: str | None = None
    tags: list | None = None
    hue: str = "algorithm"
    facet: str | None = "motion"
    rows: str | None = None
    group_by: list | None = None
    order: list | None = None
    select: dict = field(default_factory=dict)
    col_wrap: int = 4
    annotate_end: bool = True
    expert: bool = True
    legend: str = "below"
    size: list = field(default_factory=lambda: [4.2, 3.2])
    sharey: bool = False
    min_runs: int = 1
    extent: list = field(default_factory=lambda: [0.0, 1.0, 0.0, 1.0])
    sigma_levels: list = field(default_factory=lambda: [0, 4, 9])
    resolution: int = 120
    model: str = "ncsn"
    metrics: list = field(default_factory=lambda: ["iqm", "mean", "median"])
    pairs: list | None = None
    window: int = 10
    taus: int = 41


@dataclass
class TableSpec:
    """One table of a kind from the registry."""

    kind: str = "final"
    name: str = "final"
    caption: str | None = None
    by: list | None = None
    tags: list | None = None
    window: int = 10
    select: dict = field(default_factory=dict)
    digits: int = 2
    task: str | None = "motion"
    metrics: list = field(default_factory=lambda: ["iqm", "mean", "median"])
    pairs: list | None = None


@dataclass
class ReportSpec:
    """A validated plotting spec (``plotting/*.yaml``) with every default filled in."""

    file: str
    tags: dict[str, TagSpec] | None
    figures: list[FigureSpec] | None
    tables: list[TableSpec] | None
    sweep: str | None = None
    title: str | None = None
    select: dict = field(default_factory=dict)
    x_label: str = "Training step"
    grid: dict = field(default_factory=dict)
    smoothing: float = 0.0
    statistic: str = "mean"
    ci: dict = field(default_factory=dict)
    palette: dict = field(default_factory=dict)
    formats: list = field(default_factory=lambda: ["pdf", "png"])
    runs: dict = field(default_factory=dict)
    style: str = "default"
    page: bool = True
    group_by: list | None = None
    draw_points: int = 400


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


def _as_list(value) -> list | None:
    """`group_by`/`pattern` as a list: 'a,b' or ['a', 'b'] -> ['a', 'b']."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    return [str(v).strip() for v in items if str(v).strip()]


def _tag(name: str, raw: dict, file: str) -> TagSpec:
    t = _check(raw or {}, TAG_KEYS, f"tags.{name}", file)
    direction = t["direction"]
    if direction is None and t["higher_is_better"] is not None:
        direction = "higher" if t["higher_is_better"] else "lower"
    if direction is None:
        known = KNOWN_DIRECTIONS.get(name.split("/")[0])
        direction = None if known == "target" and t["expert"] is None else known
    if direction not in (None, *DIRECTIONS):
        raise SpecError(f"{file}: key 'tags.{name}.direction' must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if direction == "target" and t["expert"] is None:
        raise SpecError(f"{file}: key 'tags.{name}.direction' is 'target' (closer to the expert is better) "
                        "but the tag gives no 'expert' value")
    comparable = t["comparable"]
    if comparable is None:  # each algorithm's reward is its own (energy, discriminator, task): never one axis
        comparable = "reward" not in name.split("/")[0]
    return TagSpec(t["label"] or name, t["expert"], t["random"], t["optional"], direction, t["smoothing"],
                   comparable)


def validate(raw: Any, file: str = "<spec>") -> ReportSpec:
    """Validated spec with defaults; raises SpecError naming `file` and the offending key."""
    from near.report.registry import figure_kinds, table_kinds

    spec = _check(raw if raw is not None else {}, TOP_KEYS, "", file)
    tags = spec["tags"]
    if isinstance(tags, list):
        tags = {str(t): {} for t in tags}
    if tags is not None:
        tags = {str(t): _tag(str(t), v, file) for t, v in tags.items()}
    grid = _check(spec["grid"], GRID_KEYS, "grid", file)
    ci = _check(spec["ci"], CI_KEYS, "ci", file)
    if not 0.0 < ci["level"] < 1.0:
        raise SpecError(f"{file}: key 'ci.level' must be in (0, 1), got {ci['level']}")
    if spec["statistic"] not in ("mean", "iqm"):
        raise SpecError(f"{file}: key 'statistic' must be 'mean' or 'iqm', got {spec['statistic']!r}")
    sm = spec["smoothing"] or 0.0
    if not 0.0 <= sm < 1.0:
        raise SpecError(f"{file}: key 'smoothing' must be an EMA weight in [0, 1), got {sm}")
    for k, v in spec["select"].items():
        if not isinstance(v, (str, int, float, list)):
            raise SpecError(f"{file}: key 'select.{k}' must be a value or a list of values")
    figs = None
    if spec["figures"] is not None:
        figs = []
        for i, f in enumerate(spec["figures"]):
            f = _check(f, FIGURE_KEYS, f"figures[{i}]", file)
            if f["kind"] not in figure_kinds():
                raise SpecError(f"{file}: key 'figures[{i}].kind' must be one of {sorted(figure_kinds())}, "
                                f"got {f['kind']!r}")
            if f["legend"] not in LEGENDS:
                raise SpecError(f"{file}: key 'figures[{i}].legend' must be one of {', '.join(LEGENDS)}, "
                                f"got {f['legend']!r}")
            f["name"] = f["name"] or f"{f['kind']}{i}"
            f["group_by"] = _as_list(f["group_by"])
            _check_aggregate(f, f"figures[{i}]", file)
            figs.append(FigureSpec(**f))
        names = [f.name for f in figs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SpecError(f"{file}: figure names must be unique, repeated: {sorted(dup)}")
    tbls = None
    if spec["tables"] is not None:
        tbls = []
        for i, t in enumerate(spec["tables"]):
            t = _check(t, TABLE_KEYS, f"tables[{i}]", file)
            if t["kind"] not in table_kinds():
                raise SpecError(f"{file}: key 'tables[{i}].kind' must be one of {sorted(table_kinds())}, "
                                f"got {t['kind']!r}")
            _check_aggregate(t, f"tables[{i}]", file)
            tbls.append(TableSpec(**t))
    runs = _check(spec["runs"], RUNS_KEYS, "runs", file)
    if spec["style"] not in STYLES:
        raise SpecError(f"{file}: key 'style' must be one of {', '.join(STYLES)}, got {spec['style']!r}")
    for fmt in spec["formats"]:
        if fmt not in ("pdf", "png", "svg"):
            raise SpecError(f"{file}: key 'formats' may hold pdf, png, svg; got {fmt!r}")
    if spec["draw_points"] < 10:
        raise SpecError(f"{file}: key 'draw_points' must be at least 10, got {spec['draw_points']}")
    return ReportSpec(file, tags, figs, tbls, spec["sweep"], spec["title"], spec["select"], spec["x_label"], grid,
                      float(sm), spec["statistic"], ci, spec["palette"], spec["formats"], runs, spec["style"],
                      spec["page"], _as_list(spec["group_by"]), spec["draw_points"])


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


def load(path: Path) -> ReportSpec:
    """Read and validate one spec file."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML ({err})") from None
    return validate(raw, str(path))


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


def default_spec(tags: list[str], group_by: list[str], sweep: str | None = None) -> ReportSpec:
    """Spec derived from the data: every scalar tag, curves split by `group_by` (hue, panels, rows)
    and a final-value table by the same fields (by run when there is none)."""
    raw = {
        "tags": {t: {} for t in tags},
        "figures": [{"kind": "curves", "name": "curves"}],
        "tables": [{"name": "final", "by": list(group_by) or ["run"]}],
        "group_by": list(group_by),
        "formats": ["png"],
    }
    spec = validate(raw, "<default spec derived from the data>")
    spec.sweep = sweep
    return spec
