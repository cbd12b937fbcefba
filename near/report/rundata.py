"""`RunData`: every run of a report, built once -- its metadata row, its scalar series per tag,
and every run left out with the reason (never silently).

Built from the experiment's event files (read through the cache in `logs`), the job table's
metadata and, for runs under no job, run patterns and config files (`runmeta`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from near.report import logs, runmeta, stats
from near.report.runs import as_text, runs_table

# Job-table columns that describe the job, not the grid point; every other column is a grouping field.
JOB_COLUMNS = {"job_id", "sweep", "stage", "state", "reason", "exit_code", "attempts", "max_attempts", "run_dir",
               "command", "command_template", "scheduler_id", "point", "created", "updated", "started", "finished",
               "deps", "resources", "source", "path", "run"}
# Fields that tell runs of one group apart rather than form groups: pooled across, never a hue.
REPLICATE_FIELDS = {"seed", "run", "date", "time", "timestamp", "_"}


@dataclass
class LeftOut:
    """A run (or event file) that is not in any figure or table, and why."""

    run: str
    reason: str


@dataclass
class RunData:
    """Every run of one report: metadata, scalar series, what was left out."""

    exp: Path
    runs: pd.DataFrame  # one row per run with scalars; index = run name; columns: metadata (+ run_dir, stage)
    series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # tag -> run -> (steps, values)
    fields: list[str]  # metadata columns that can group runs (job axes, pattern fields, config columns)
    jobs: pd.DataFrame | None = None
    left_out: list[LeftOut] = field(default_factory=list)
    points: int = 0
    unselected: int = 0  # runs with scalars that the spec's `select` keeps out (on purpose: not left out)

    def tags(self) -> list[str]:
        """Every tag some run logged, sorted."""
        return sorted(self.series)

    def label(self, run: str) -> str:
        """'field=value ...' of a run's grouping fields, for warnings and the page."""
        row = self.runs.loc[run] if run in self.runs.index else None
        if row is None:
            return run
        parts = [f"{f}={row[f]}" for f in self.fields if f in row.index and as_text([row[f]])[0] is not None]
        return f"{run} ({', '.join(parts)})" if parts else run


def _names(runs: list[str], limit: int = 6) -> str:
    shown = ", ".join(runs[:limit])
    return shown + (f", ... ({len(runs)} in all)" if len(runs) > limit else "")


def discover(exp: Path, jobs: pd.DataFrame | None) -> list[Path]:
    """Event files of the experiment: under each job's run dir (and an imported job's source), else
    anywhere under EXP."""
    jobs = _with_sources(jobs)  # imported runs are read where they lie, never through runs/<id>
    if jobs is None or "run_dir" not in jobs.columns:
        return logs.find_event_files([exp])
    return logs.find_event_files([Path(r) for r in jobs["run_dir"].dropna().astype(str) if os.path.isdir(r)])


def _with_sources(jobs: pd.DataFrame | None) -> pd.DataFrame | None:
    """Jobs whose run dir for the event files is the imported source folder, where they have one."""
    if jobs is None or "source" not in jobs.columns:
        return jobs
    src = jobs["source"]
    has = src.notna() & (src.astype(str) != "")
    out = jobs.copy()
    out.loc[has, "run_dir"] = src[has].astype(str)
    return out


@dataclass
class RunOptions:
    """How runs under no job are named: run patterns (first match wins), config keys and files."""

    patterns: list[runmeta.RunPattern] = field(default_factory=list)
    config_keys: dict[str, str] = field(default_factory=dict)
    config_files: list[str] = field(default_factory=list)


def build(exp: Path, jobs: pd.DataFrame | None, files: list[Path], options: RunOptions, cache: Path | None,
          workers: int, warn: Callable[[str], None], log: Callable[[str], None], pool=None,
          select: dict | None = None, where: str = "spec") -> tuple[RunData, pd.DataFrame, object]:
    """Read `files` (through the cache) into a RunData; returns (data, tidy frame, cache writer or None)."""
    from near.report.runs import select_runs

    t0 = time.perf_counter()
    frame, rep = logs.load_scalars(files, cache, workers, log=log, pool=pool, background_write=True)
    for w in rep.warnings:
        warn(w)
    meta = logs.path_metadata([str(p) for p in files], _with_sources(jobs))
    meta, fields = _bare_metadata(exp, meta, options, warn)
    left: list[LeftOut] = []
    meta = _drop_empty_and_duplicates(meta, rep.file_info, left)
    if jobs is None:  # a folder of runs: a run dir without event files is in no figure, so it is named
        left += _runs_without_event_files(exp, set(meta["run"].astype(str)), options.patterns)
    keep = set(meta["path"])
    if len(frame) and not frame["path"].isin(keep).all():
        frame = frame[frame["path"].isin(keep)]
    frame["path"] = frame["path"].astype("category").cat.remove_unused_categories()
    frame = logs.dedupe_resumed(logs.attach_run(frame, meta), warn) if len(frame) else frame.assign(run=pd.Categorical([]))
    runs = runs_table(meta) if len(meta) else pd.DataFrame({"run": []}).set_index("run", drop=False)
    if "run_dir" not in runs.columns:
        runs["run_dir"] = [str(exp / r) for r in runs.index]
    else:
        runs["run_dir"] = [d if isinstance(d, str) else str(exp / r) for r, d in zip(runs.index, runs["run_dir"])]
    if jobs is not None and "job_id" in jobs.columns:  # job metadata is the job's, whatever folder it reads
        own = dict(zip(jobs["job_id"].astype(str), jobs["run_dir"]))
        runs["run_dir"] = [own.get(r, d) for r, d in zip(runs.index, runs["run_dir"])]
        fields = [c for c in jobs.columns if c not in JOB_COLUMNS] + [f for f in fields if f not in jobs.columns]
    motions = [runmeta.motions_label(Path(d)) for d in runs["run_dir"]]
    if any(m is not None for m in motions):  # a column to group by (--group-by motions), not a default field
        runs["motions"] = motions
    unselected = 0
    if select:
        kept = select_runs(runs, select, where)
        if len(runs) and kept.empty:  # say which values there are: a typo must not read as "no data"
            have = "; ".join(f"{k}: " + ", ".join(sorted({v for v in as_text(runs[k]) if v is not None})[:10])
                             for k in select)
            warn(f"{where}: select {select} keeps none of the {len(runs)} run(s) with scalars (values: {have})")
        unselected = len(runs) - len(kept)
        runs = kept
        frame = frame[frame["run"].isin(runs.index)]
    series = _split(frame) if len(frame) else {}
    _drop_non_finite(series, warn)
    for item in _group_left(left):
        warn(item)
    data = RunData(Path(exp), runs, series, fields, jobs, left, len(frame), unselected)
    log(f"near report: {rep.points} scalar points from {rep.files} file(s) ({rep.read} read, {rep.cached} from "
        f"cache) in {time.perf_counter() - t0:.2f}s")
    return data, frame, rep.writer


def _group_left(left: list[LeftOut]) -> list[str]:
    by_reason: dict[str, list[str]] = {}
    for item in left:
        by_reason.setdefault(item.reason, []).append(item.run)
    return [f"{len(r)} run(s) left out: {reason}: {_names(r)}" for reason, r in by_reason.items()]


def _bare_metadata(exp: Path, meta: pd.DataFrame, options: RunOptions, warn) -> tuple[pd.DataFrame, list[str]]:
    """Runs under no job get their run dir from the run patterns, and metadata from the patterns'
    fields and their own config files; files no pattern matches are left out with a warning."""
    bare = meta["job_id"].isna().to_numpy() if "job_id" in meta.columns else np.ones(len(meta), bool)
    if not bare.any():
        return meta, []
    found, warns = runmeta.bare_runs(meta.loc[bare, "path"].tolist(), exp, options.patterns, options.config_keys,
                                     options.config_files)
    for w in warns:
        warn(w)
    fields = list(dict.fromkeys([f for p in options.patterns for f in p.fields if f != "_"]
                                + list(options.config_keys)))
    jobs = meta.loc[~bare]
    if jobs.empty:
        return found.reset_index(drop=True), fields
    return pd.concat([jobs.astype(object), found], ignore_index=True), fields


def _runs_without_event_files(exp: Path, have: set[str], patterns: list) -> list[LeftOut]:
    """Runs whose ``summaries`` folder holds no event file, named as their event files would name them
    (by the run patterns, else the folder holding ``summaries``), unless the run has data elsewhere."""
    out, root = [], Path(exp).resolve()
    for folder in logs.empty_summaries([root]):
        rel = os.path.relpath(folder, root).replace(os.sep, "/")
        found = runmeta.run_dir_of(f"{rel}/events.out.tfevents", patterns) or runmeta.run_dir_of(
            f"{rel}/events.out.tfevents", None)
        run = found[0]
        if run not in have and run not in {x.run for x in out}:
            out.append(LeftOut(run, "no event file in its summaries folder"))
    return out


def _drop_empty_and_duplicates(meta: pd.DataFrame, info: dict[str, dict], left: list[LeftOut]) -> pd.DataFrame:
    """Leave out event files without a scalar (a run left with none is reported) and byte-identical
    copies of a file already counted (a copied run would otherwise count twice)."""
    keep, seen, empty_runs = [], {}, {}
    for path, run in zip(meta["path"], meta["run"]):
        i = info.get(str(path), {})
        if not i.get("points"):
            empty_runs.setdefault(run, True)
            keep.append(False)
            continue
        empty_runs[run] = False
        digest = i.get("digest")
        if digest and digest in seen and seen[digest] != run:
            left.append(LeftOut(str(run), f"its event file is a byte-identical copy of run {seen[digest]}'s"))
            keep.append(False)
            continue
        seen.setdefault(digest, run)
        keep.append(True)
    for run, empty in empty_runs.items():
        if empty:
            left.append(LeftOut(str(run), "no scalar in its event file(s)"))
    return meta[np.array(keep, dtype=bool)] if len(meta) else meta


def _split(frame: pd.DataFrame) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{tag: {run: (steps, values)}} with one sort over the whole frame (no per-group pandas)."""
    tag_codes = frame["tag"].cat.codes.to_numpy()
    run_cat = frame["run"].astype("category")
    run_codes = run_cat.cat.codes.to_numpy()
    width = int(run_codes.max(initial=0)) + 1
    key = tag_codes.astype(np.int64) * width + run_codes
    per_key = stats.split_runs(key, frame["step"].to_numpy(), frame["value"].to_numpy())
    tags, runs = frame["tag"].cat.categories, run_cat.cat.categories
    out: dict[str, dict] = {}
    for k, sv in per_key.items():
        out.setdefault(str(tags[k // width]), {})[str(runs[k % width])] = sv
    return out


def _drop_non_finite(series: dict, warn) -> None:
    """±inf (a diverged run) becomes missing, with a warning naming the run and tag: left out of
    every curve, final value and aggregate. NaN already means 'no value' and stays silent."""
    for tag, per_run in series.items():
        for run, (steps, values) in per_run.items():
            bad = np.isinf(values)
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                warn(f"run {run}: tag '{tag}' has {int(bad.sum())} infinite value(s) (first {values[first]} "
                     f"at step {int(steps[first])}); left out of the curves, tables and aggregates")
                per_run[run] = (steps, np.where(bad, np.nan, values))
