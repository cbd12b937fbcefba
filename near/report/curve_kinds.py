"""Curve figure kinds: learning curves per tag, curves split by one field (hue), panels by a second
and rows by a third; `ablation` is the same with ordered colours for the variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from near.errors import SpecError
from near.report import figures, stats
from near.report.figures import slug
from near.report.registry import Output, figure_kind
from near.report.rundata import RunData
from near.report.runs import as_text, select_runs
from near.report.spec import FigureSpec


def value_order(values, order: list | None) -> list[str]:
    """Distinct values as text: those in `order` first (in its order), then the rest sorted."""
    present = sorted({str(v) for v in values if v is not None and not pd.isna(v)})
    if order:
        first = [str(o) for o in order if str(o) in present]
        return first + [v for v in present if v not in first]
    return present


def grouping(data: RunData, fig: FigureSpec, out: Output) -> list[str | None]:
    """[hue, panel, row] fields of a figure: the caller's --group-by, else the figure's group_by,
    else the spec's, else its hue/facet/rows."""
    fields = next((f for f in (out.group_by, fig.group_by, out.spec.group_by) if f is not None), None)
    if fields is not None:
        if len(fields) > 3:
            raise SpecError(f"{out.where(fig)}: group_by takes at most 3 fields (curves, panels, rows), got {fields}")
        found = list(fields) + [None] * (3 - len(fields))
    else:
        hue = fig.hue if fig.kind == "curves" or fig.hue != "algorithm" else "ablation"
        found = [hue, fig.facet, fig.rows]
    for col in [c for c in found if c]:
        if col not in data.runs.columns:
            avail = ", ".join(c for c in data.runs.columns if c not in ("path", "run_dir"))
            raise SpecError(f"{out.where(fig)}: field '{col}' is not a column of the runs (available: {avail})")
    return found


def figure_runs(data: RunData, fig: FigureSpec, out: Output, fields: list[str]) -> pd.DataFrame:
    """The runs a figure draws: its selection, less runs without a value for a grouping field
    (a warning names them), and a warning when fewer than its `min_runs` remain."""
    runs = select_runs(data.runs, fig.select, out.where(fig))
    missing = pd.Series(False, index=runs.index)
    for col in fields:
        missing |= pd.Series([v is None for v in as_text(runs[col])], index=runs.index)
    if missing.any():
        names = list(runs.index[missing.to_numpy()])
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
        out.warn(f"{out.where(fig)}: {len(names)} run(s) left out: no value for {' / '.join(fields)}: {shown}")
        runs = runs[~missing.to_numpy()]
    if len(runs) < fig.min_runs:
        out.warn(f"{out.where(fig)}: {len(runs)} run(s), fewer than its min_runs {fig.min_runs}")
    return runs


def _thin(curve: stats.Curve, points: int) -> stats.Curve:
    """At most `points` grid points of a curve for drawing (evenly spaced, both ends kept)."""
    n = len(curve.grid)
    if n <= points:
        return curve
    idx = np.unique(np.linspace(0, n - 1, points).round().astype(int))
    return stats.Curve(curve.grid[idx], curve.center[idx], curve.low[idx], curve.high[idx], curve.n[idx], curve.runs)


@figure_kind("curves")
def curves(data: RunData, fig: FigureSpec, out: Output) -> list[Path]:
    """One figure per tag: a line and band per `hue` value, a panel per facet value (and row)."""
    fields = grouping(data, fig, out)
    hue, facet, rows = fields
    runs = figure_runs(data, fig, out, [f for f in fields if f])
    tags = fig.tags or list(out.spec.tags)
    written = []
    for tag in tags:
        if tag not in out.spec.tags:
            raise SpecError(f"{out.where(fig)} names tag '{tag}' not listed under tags")
        if tag not in data.series:
            continue
        have = runs[runs.index.isin(list(data.series[tag]))]
        if have.empty:
            out.warn(f"{out.where(fig)}: tag '{tag}': no selected run logged it; figure not drawn")
            continue
        written += _tag_figure(data, fig, out, tag, have, hue, facet, rows)
    return written


@figure_kind("ablation")
def ablation(data: RunData, fig: FigureSpec, out: Output) -> list[Path]:
    """Curves of ablation variants (hue: ablation by default), coloured in the variants' order."""
    return curves(data, fig, out)


# rl-games' tags (and near's trainer's, near/training/tags.py) name their step's unit in their suffix
STEP_UNITS = {"iter": "Epoch", "time": "Training time (s)"}


def x_label_of(tag: str, configured: str) -> str:
    """The x axis of `tag`: 'Epoch' for an ``/iter`` tag, 'Training time (s)' for a ``/time`` tag (their
    steps are never frames, whatever the spec-wide `x_label` says), else `configured`."""
    return STEP_UNITS.get(tag.rsplit("/", 1)[-1], configured) if "/" in tag else configured


def _tag_figure(data: RunData, fig: FigureSpec, out: Output, tag: str, runs: pd.DataFrame, hue: str | None,
                facet: str | None, rows: str | None) -> list[Path]:
    spec, tspec = out.spec, out.spec.tags[tag]
    series = data.series[tag]
    near_style = spec.style == "near"  # NEAR's plotter: raw values, mean +- 1 std
    smoothing = 0.0 if near_style else (tspec.smoothing if tspec.smoothing is not None else spec.smoothing)
    text = {c: pd.Series(as_text(runs[c]), index=runs.index) for c in (hue, facet, rows) if c}
    hue_values = value_order(text[hue].unique(), fig.order) if hue else [None]
    if fig.kind == "ablation":
        colours = figures.ordered_colours([h or "all runs" for h in hue_values])
    else:
        colours = figures.distinct_colours([h or "all runs" for h in hue_values], spec.palette)
    if not tspec.comparable and hue:  # each group's own metric: panels (own y axis) per group, never one axis
        if not facet:
            facet = hue
        elif not rows:
            rows = hue
    facet_values = value_order(text[facet].unique(), fig.order if facet == hue else None) if facet else [None]
    row_values = value_order(text[rows].unique(), fig.order if rows == hue else None) if rows else [None]
    panels = []
    for rv in row_values:
        for fv in facet_values:
            sel = np.ones(len(runs), bool)
            if fv is not None:
                sel &= (text[facet] == fv).to_numpy()
            if rv is not None:
                sel &= (text[rows] == rv).to_numpy()
            in_panel = runs.index[sel]
            title = " · ".join(v for v in (rv, fv) if v is not None) or tspec.label
            if not len(in_panel):
                out.warn(f"{out.where(fig)}: tag '{tag}': panel '{title}' has no run; drawn empty")
            panels.append({"title": title, "curves": _panel_curves(spec, series, in_panel, hue, text, hue_values,
                                                                   smoothing, near_style),
                           "expert": tspec.reference("expert", fv) if fig.expert else None})
    title = fig.title or spec.title
    better = f" ({tspec.better})" if tspec.better else ""
    title = f"{title}: {tspec.label}{better}" if title else f"{tspec.label}{better}"
    stat_name = "IQM" if spec.statistic == "iqm" and not near_style else "mean"
    band = "mean ± 1 std across runs" if near_style else f"{int(round(spec.ci['level'] * 100))}% bootstrap CI"
    arrow = {"lower": " ↓", "higher": " ↑", "target": " → expert"}.get(tspec.direction or "", "")
    base = out.dir / f"{slug(fig.name)}_{slug(tag)}"
    ncols = len(facet_values) if rows else min(len(panels), fig.col_wrap)
    x_label = x_label_of(tag, spec.x_label)
    args = (panels, base, title, x_label, f"{tspec.label} ({stat_name}){arrow}", colours, fig.annotate_end,
            ncols, tuple(fig.size), fig.sharey, tuple(spec.formats), spec.ci["level"], band,
            fig.legend != "none")
    out.submit(figures.curves_figure, args)
    n = len(runs)
    out.captions[base.name] = fig.caption or (
        f"{tspec.label}{better} over {x_label.lower()}: {stat_name} over the runs"
        + (f" of each {hue}" if hue else "") + f" ({n} run(s) in all)" + (f", a panel per {facet}" if facet else "")
        + (f", a row per {rows}" if rows else "") + f"; shaded: {band}.")
    return [base.with_suffix(f".{fmt}") for fmt in spec.formats]


def _panel_curves(spec, series, in_panel, hue, text, hue_values, smoothing, near_style) -> dict:
    grid = stats.step_grid([series[r][0] for r in in_panel], spec.grid["points"], spec.grid["truncate"]) \
        if len(in_panel) else np.zeros(0)
    curves = {}
    for hv in hue_values:
        members = [r for r in in_panel if hue is None or text[hue][r] == hv]
        if not members:
            continue
        g, mat = stats.series_matrix([series[r] for r in members], grid=grid, smoothing=smoothing)
        if near_style:
            c = stats.mean_std_curve(g, mat, members)
        else:
            c = stats.aggregate_curve(g, mat, members, spec.statistic, spec.ci["level"], spec.ci["n_boot"],
                                      spec.ci["seed"])
        curves[hv if hv is not None else "all runs"] = _thin(c, spec.draw_points)
    return curves
