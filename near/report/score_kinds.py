"""Kinds built on each run's final score: rliable's aggregate, profile and improvement figures, and
the final-performance, aggregate and improvement tables (best value in bold by the tag's direction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from near.errors import SpecError
from near.report import aggregate_figures, aggregates, figures, stats, tables
from near.report.curve_kinds import value_order
from near.report.figures import slug
from near.report.registry import Output, figure_kind, table_kind
from near.report.rundata import RunData
from near.report.runs import as_text, select_runs
from near.report.spec import TagSpec


def finals(data: RunData, tag: str, runs: pd.DataFrame, columns: list[str], window: int,
           warn=None, where: str = "") -> pd.DataFrame:
    """One row per run of `runs` that logged `tag`: its `columns` as text and ``final``, the mean of
    its last `window` values (missing ones skipped). A run whose last `window` values are all
    missing (NaN: a diverged run) has no final value: it is left out, named through `warn`."""
    series = data.series[tag]
    names = [r for r in runs.index if r in series]
    per_run = pd.DataFrame({c: as_text(runs.loc[names, c]) for c in columns}, index=names)
    per_run["final"] = [float(stats.nanmean(series[r][1][-window:])) for r in names]
    none = per_run.index[per_run["final"].isna()].tolist()
    if none:
        # left in, such a run would count as a run of its group while adding nothing to its mean
        if warn is not None:
            shown = ", ".join(none[:6]) + (f", ... ({len(none)} in all)" if len(none) > 6 else "")
            warn(f"{where}: tag '{tag}': {len(none)} run(s) with no finite value in the last {window} point(s) "
                 f"left out of the final scores: {shown}")
        per_run = per_run[per_run["final"].notna()]
    return per_run


def _unorient(v: tuple[float, float, float], metric: str) -> tuple[float, float, float]:
    """An estimate of negated scores back in the tag's own values (the interval flips)."""
    point, lo, hi = v
    if metric == "optimality_gap":  # not a location statistic: left as computed
        return v
    return -point, -hi, -lo


def _score_label(tspec: TagSpec, sm) -> str:
    if sm.normalized:
        return f"{tspec.label} (normalised: 0 random, 1 expert; higher is better)"
    if tspec.direction == "target":
        return f"{tspec.label}: distance to expert (lower is better)"
    return f"{tspec.label} ({tspec.better})" if tspec.better else tspec.label


def scores(data: RunData, out: Output, where: str, tag: str, runs: pd.DataFrame, group: str, task: str | None,
           window: int):
    """rliable-style score matrices of `tag`'s finals: normalised when the tag gives expert and
    random, the distance to the expert for a `target` tag, oriented so higher is better."""
    for col in [group] + ([task] if task else []):
        if col not in runs.columns:
            raise SpecError(f"{where}: column '{col}' is not in the data")
    per_run = finals(data, tag, runs, [group] + ([task] if task else []), window, out.warn, where)
    tspec = out.spec.tags[tag]
    tasks = sorted({str(v) for v in per_run[task] if v is not None}) if task else [None]
    refs = {}
    for t in tasks:
        expert, random = tspec.reference("expert", t), tspec.reference("random", t)
        if expert is not None and random is not None:
            refs[t if t is not None else "all"] = (expert, random)
    higher = tspec.direction != "lower"
    if tspec.direction == "target" and not (refs and len(refs) == len(tasks)):
        experts = [tspec.reference("expert", t) for t in (per_run[task] if task else [None] * len(per_run))]
        per_run["final"] = [abs(f - e) if e is not None else np.nan for f, e in zip(per_run["final"], experts)]
        higher = False
    sm = aggregates.score_matrices(per_run, group, task, refs, higher)
    for w in sm.warnings:
        out.warn(f"{where}: tag '{tag}': {w}")
    return sm


def _pairs(pairs: list, sm, where: str, out: Output) -> list[tuple[str, str]]:
    pairs = [(str(x), str(y)) for x, y in pairs]
    missing = sorted({g for p in pairs for g in p if g not in sm.scores})
    if missing:
        out.warn(f"{where}: no aggregate scores for {', '.join(missing)} (have: {', '.join(sm.scores)}); "
                 "their pairs are left out")
    return [p for p in pairs if p[0] in sm.scores and p[1] in sm.scores]


def _score_figure(data: RunData, fig, out: Output) -> list[Path]:
    spec, where = out.spec, out.where(fig)
    runs = select_runs(data.runs, fig.select, where)
    written = []
    level, reps, seed = spec.ci["level"], spec.ci["n_boot"], spec.ci["seed"]
    for tag in fig.tags or list(spec.tags):
        if tag not in data.series:
            continue
        sm = scores(data, out, where, tag, runs, fig.hue, fig.facet, fig.window)
        order = value_order(list(sm.scores), fig.order)
        if not order:
            out.warn(f"{where}: tag '{tag}': no group has scores on every task; figure not drawn")
            continue
        colours = figures.distinct_colours(order, spec.palette)
        label = _score_label(spec.tags[tag], sm)
        base = out.dir / f"{slug(fig.name)}_{slug(tag)}"
        title = f"{fig.title or spec.tags[tag].label} ({len(sm.tasks)} task(s): {', '.join(sm.tasks)})"
        if fig.kind == "aggregate":
            est = aggregates.interval_estimates({g: sm.scores[g] for g in order}, tuple(fig.metrics), level, reps, seed)
            if sm.oriented:  # report the tag's own values, not the negated ones
                est = {g: {m: _unorient(v, m) for m, v in e.items()} for g, e in est.items()}
            written += aggregate_figures.interval_figure(est, order, colours, tuple(fig.metrics), label, title, base,
                                                         tuple(spec.formats), level)
        elif fig.kind == "profile":
            flat = np.concatenate([m.ravel() for m in sm.scores.values()])
            lo, hi = float(flat.min()), float(flat.max())
            pad = 0.05 * (hi - lo) or 0.05  # start below every run, end above every run
            taus = np.linspace(lo - pad, hi + pad, fig.taus)
            prof = aggregates.performance_profiles({g: sm.scores[g] for g in order}, taus, level, reps, seed)
            shown = -taus if sm.oriented else taus
            written += aggregate_figures.profile_figure(prof, shown, order, colours, label, sm.oriented, title, base,
                                                        tuple(spec.formats), level)
        else:
            pairs = _pairs(fig.pairs, sm, where, out)
            poi = aggregates.probability_of_improvement(sm.scores, pairs, level, reps, seed)
            written += aggregate_figures.improvement_figure(poi, pairs, colours, title, base, tuple(spec.formats),
                                                            level)
        out.captions[base.name] = fig.caption or f"{label}: {fig.kind} of final scores across {fig.facet or 'runs'}."
    return written


for _kind in ("aggregate", "profile", "improvement"):
    figure_kind(_kind)(_score_figure)


@table_kind("final")
def final_table(data: RunData, tbl, out: Output) -> list[Path]:
    """Final performance per group: mean of each run's last values, bootstrap CI across runs."""
    spec, where = out.spec, out.where(tbl)
    runs = select_runs(data.runs, tbl.select, where)
    by = tbl.by or out.group_by or spec.group_by or [c for c in ("algorithm", "motion", "ablation")
                                                      if c in runs.columns] or ["run"]
    for col in by:
        if col not in runs.columns:
            raise SpecError(f"{where}: column '{col}' is not in the data")
    parts = []
    for tag in tbl.tags or list(spec.tags):
        if tag not in data.series:
            continue
        per_run = finals(data, tag, runs, by, tbl.window, out.warn, where)
        per_run = per_run[[all(v is not None for v in row) for row in per_run[by].itertuples(index=False)]]
        if per_run.empty:
            continue
        summ = stats.summarize_finals(per_run, by, spec.ci["level"], spec.ci["n_boot"], spec.ci["seed"])
        parts.append(summ.assign(tag=tag))
    if not parts:
        out.warn(f"{where} has no data")
        return []
    summary = pd.concat(parts, ignore_index=True)
    labels = {t: f"{v.label} {_arrow(v)}".strip() for t, v in spec.tags.items()}
    best = _best_rows(summary, spec.tags, by)
    caption = tbl.caption or (f"Final performance (mean of the last {tbl.window} logged values per run; mean over "
                              f"runs with {int(spec.ci['level'] * 100)}% bootstrap CI). ↓ lower is better, ↑ higher "
                              "is better, → closest to the expert is better; the best group of each comparison in bold.")
    out.tables_html.append((tbl.name, caption, tables.wide(summary, by, tbl.digits, labels, best)))
    return tables.write_tables(summary, by, out.dir / slug(tbl.name), tbl.digits, labels, caption=caption, best=best)


def _arrow(tspec: TagSpec) -> str:
    return {"lower": "↓", "higher": "↑", "target": "→ expert"}.get(tspec.direction or "", "")


def _best_rows(summary: pd.DataFrame, tags: dict[str, TagSpec], by: list[str]) -> np.ndarray:
    """Per row of a summary: is it the best of its tag by the tag's direction, compared across the
    first `by` field within each value of the others (e.g. best algorithm per motion); never for a
    tag whose groups do not share one scale (comparable: false)."""
    best = np.zeros(len(summary), bool)
    rest = [c for c in by[1:] if c in summary.columns]
    for keys, part in summary.groupby(["tag", *rest], sort=False, observed=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        t = tags.get(keys[0])
        # a tag each group optimises in its own version (comparable: false) has no best group
        if t is None or t.direction is None or not t.comparable or len(part) < 2:
            continue
        vals = part["mean"].to_numpy(dtype=float)
        if t.direction == "target":
            task = str(part["motion"].iloc[0]) if "motion" in part.columns else None
            expert = t.reference("expert", task)
            if expert is None:
                continue
            vals = -np.abs(vals - expert)
        elif t.direction == "lower":
            vals = -vals
        if np.isfinite(vals).any():
            best[part.index[int(np.nanargmax(vals))]] = True
    return best


def _aggregate_table(data: RunData, tbl, out: Output) -> list[Path]:
    spec, where = out.spec, out.where(tbl)
    runs = select_runs(data.runs, tbl.select, where)
    group = (tbl.by or ["algorithm"])[0]
    level, reps, seed, digits = spec.ci["level"], spec.ci["n_boot"], spec.ci["seed"], tbl.digits
    tidy, cells = [], {}
    for tag in tbl.tags or list(spec.tags):
        if tag not in data.series:
            continue
        sm = scores(data, out, where, tag, runs, group, tbl.task, tbl.window)
        if not sm.scores:
            continue
        kind = "normalised" if sm.normalized else "raw"
        label = spec.tags[tag].label
        if tbl.kind == "aggregate":
            est = aggregates.interval_estimates(sm.scores, tuple(tbl.metrics), level, reps, seed)
            for g, per_metric in est.items():
                for m, v in per_metric.items():
                    v = _unorient(v, m) if sm.oriented else v
                    tidy.append({group: g, "tag": tag, "metric": m, "scores": kind, "runs": sm.scores[g].shape[0],
                                 "tasks": len(sm.tasks), "value": v[0], "ci_low": v[1], "ci_high": v[2]})
                    cells.setdefault(g, {})[f"{label} {m.upper() if m == 'iqm' else m}"] = \
                        tables.interval_cell(*v, digits)
        else:
            for (x, y), v in aggregates.probability_of_improvement(sm.scores, _pairs(tbl.pairs, sm, where, out),
                                                                   level, reps, seed).items():
                tidy.append({"x": x, "y": y, "tag": tag, "scores": kind, "value": v[0], "ci_low": v[1],
                             "ci_high": v[2]})
                cells.setdefault(f"P({x} > {y})", {})[label] = tables.interval_cell(*v, digits)
    if not tidy:
        out.warn(f"{where} has no data")
        return []
    first = group if tbl.kind == "aggregate" else "pair"
    table = pd.DataFrame([{first: k, **v} for k, v in cells.items()])
    what = (f"{', '.join(m.upper() if m == 'iqm' else m for m in tbl.metrics)} over all runs and tasks"
            if tbl.kind == "aggregate" else "probability of improvement, averaged over tasks")
    caption = tbl.caption or (f"{what.capitalize()} of final scores (mean of the last {tbl.window} values per run; "
                              f"normalised (x - random) / (expert - random) where the spec gives both), "
                              f"{int(level * 100)}% stratified bootstrap CI ({reps} resamples).")
    out.tables_html.append((tbl.name, caption, table))
    return tables.write_frames(table, pd.DataFrame(tidy), out.dir / slug(tbl.name), caption)


table_kind("aggregate")(_aggregate_table)
table_kind("improvement")(_aggregate_table)
