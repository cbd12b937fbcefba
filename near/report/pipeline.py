"""`near report EXP`: job table + event files -> tidy frame -> figures and tables named by a spec."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from near.errors import SpecError
from near.report import aggregates, figures, logs, runmeta, spec as specmod, stats, tables
from near.report.figures import slug
from near.report.runs import as_text, runs_table, select_runs

# Bump when a change of this package changes what a report draws (invalidates up-to-date stamps).
REPORT_VERSION = 2


def load_jobs(exp: Path) -> pd.DataFrame | None:
    """The sweep's job table as a frame, or None when EXP has no jobs.db (a bare folder of runs)."""
    db = Path(exp) / "jobs.db"
    if not db.is_file():
        return None
    from near.jobtable import JobTable  # the issue-2 job table: to_frame() with run_dir and axis columns

    return JobTable.open(db).to_frame()


def plotting_dirs() -> list[Path]:
    """Where specs are looked up: ./plotting, then the checkout's plotting/ next to the package."""
    here = Path(__file__).resolve().parents[2] / "plotting"
    cwd = Path.cwd() / "plotting"
    return [cwd] if cwd.resolve() == here else [cwd, here]


def _value_order(values, order: list | None) -> list[str]:
    present = sorted({str(v) for v in values if not pd.isna(v)})
    if order:
        first = [str(o) for o in order if str(o) in present]
        return first + [v for v in present if v not in first]
    return present


def _reference(ref, facet_value: str | None) -> float | None:
    """A tag's reference value (scalar, or per facet value) for one facet value."""
    if ref is None:
        return None
    if isinstance(ref, dict):
        val = ref.get(facet_value) if facet_value is not None else None
        return float(val) if val is not None else None
    return float(ref)


def _expert_for(tag_spec: dict, facet_value: str | None) -> float | None:
    return _reference(tag_spec.get("expert"), facet_value)


def _unorient(v: tuple[float, float, float], metric: str) -> tuple[float, float, float]:
    """An estimate of negated scores back in the tag's own values (the interval flips)."""
    point, lo, hi = v
    if metric == "optimality_gap":  # not a location statistic: left as computed
        return v
    return -point, -hi, -lo


def _score_label(tspec: dict, sm) -> str:
    if sm.normalized:
        return f"{tspec['label']} (normalised: 0 random, 1 expert)"
    return tspec["label"]


class Report:
    """One report run: holds the frame, the spec and the output folder; prints progress."""

    def __init__(self, exp: Path, spec_path: Path | None = None, out: Path | None = None,
                 workers: int | None = None, use_cache: bool = True, log=print, jobs: pd.DataFrame | None = None,
                 force: bool = False, pattern: str | None = None, config: list | dict | None = None,
                 page: bool | None = None):
        self.exp = Path(exp).resolve()
        if not self.exp.is_dir():
            raise SpecError(f"{exp}: no such experiment folder")
        self.spec_path = spec_path
        self.out = Path(out) if out else self.exp / "figures"
        self.workers = workers
        self.use_cache = use_cache
        self.force = force
        self.n_workers = workers or os.cpu_count() or 1
        self.pool = None  # one process pool for decoding and drawing (started once)
        self.cache_writer = None
        self.draws: list = []
        self.log = log
        self.jobs = jobs  # a ready job frame (tests, notebooks); else read from EXP/jobs.db
        self.written: list[Path] = []
        self.warnings: list[str] = []
        self.pattern_text = pattern  # run pattern / config keys given by the caller; else the spec's `runs`
        self.config_arg = config
        self.page = page
        self.tables_html: list[tuple[str, str, pd.DataFrame]] = []  # (name, caption, wide table) for the page

    # -- reading -----------------------------------------------------------------------
    def discover(self) -> list[Path]:
        """Job table and event files of the experiment (cheap: SQLite read + directory walk)."""
        jobs = self.jobs if self.jobs is not None else load_jobs(self.exp)
        self.jobs = jobs
        roots = [self.exp]
        if jobs is not None and "run_dir" in jobs.columns:
            roots = [Path(r) for r in jobs["run_dir"].dropna().astype(str) if os.path.isdir(r)]
        self.files = logs.find_event_files(roots)
        self.log(f"near report: {self.exp}: {len(self.files)} event file(s) in "
                 f"{len(jobs) if jobs is not None else 'no'} job(s)")
        return self.files

    def load(self) -> pd.DataFrame:
        """Tidy frame of all scalars with job metadata (cached)."""
        t0 = time.perf_counter()
        if not hasattr(self, "files"):
            self.discover()
        cache = self.exp / ".cache" / "scalars" if self.use_cache else None
        frame, rep = logs.load_scalars(self.files, cache, self.n_workers, log=self.log, pool=self.pool,
                                       background_write=True)
        self.cache_writer = rep.writer
        for w in rep.warnings:
            self.warn(w)
        # Metadata lives at the run level (one row per event file); big frames carry only `run`.
        self.path_meta = self._bare_metadata(
            logs.path_metadata([str(p) for p in frame["path"].astype("category").cat.categories], self.jobs))
        if len(self.path_meta) < len(frame["path"].cat.categories):  # files the run pattern did not match
            frame = frame[frame["path"].isin(self.path_meta["path"])]
            frame["path"] = frame["path"].cat.remove_unused_categories()
        frame = logs.dedupe_resumed(logs.attach_run(frame, self.path_meta))
        self.log(f"near report: {rep.points} scalar points from {rep.files} file(s) "
                 f"({rep.read} read, {rep.cached} from cache) in {time.perf_counter() - t0:.2f}s")
        self.frame = frame
        return frame

    def run_options(self) -> tuple[runmeta.RunPattern | None, dict[str, str]]:
        """The run pattern and config keys for runs under no job: the caller's, else the spec's `runs`."""
        path, _ = self.spec_source()
        runs = specmod.load(path)["runs"] if path is not None else {}
        text = self.pattern_text or runs.get("pattern")
        where = "--pattern" if self.pattern_text else f"{path}: key 'runs.pattern'"
        pattern = runmeta.compile_pattern(text, where) if text else None
        keys = runmeta.parse_config_keys(self.config_arg if self.config_arg is not None else runs.get("config"),
                                         "--config" if self.config_arg is not None else f"{path}: key 'runs.config'")
        return pattern, keys

    def _bare_metadata(self, meta: pd.DataFrame) -> pd.DataFrame:
        """Replace the run of event files under no job by their run dir (run pattern) and add the
        pattern's fields and the run's own config values as columns; files the pattern misses go."""
        bare = meta["job_id"].isna().to_numpy() if "job_id" in meta.columns else np.ones(len(meta), bool)
        if not bare.any():
            return meta
        pattern, keys = self.run_options()
        found, warns = runmeta.bare_runs(meta.loc[bare, "path"].tolist(), self.exp, pattern, keys)
        for w in warns:
            self.warn(w)
        jobs = meta.loc[~bare]
        if jobs.empty:
            return found.reset_index(drop=True)
        return pd.concat([jobs.astype(object), found], ignore_index=True)

    def spec_source(self) -> tuple[Path | None, str]:
        """(spec file or None for the derived default, its text) -- what the outputs depend on."""
        path = Path(self.spec_path) if self.spec_path else None
        names = [self.exp.name]  # the sweep's name: the job table's, else the folder's
        if self.jobs is not None and "sweep" in self.jobs.columns:
            names = [str(n) for n in self.jobs["sweep"].dropna().unique() if str(n)] + names
        for name in names if path is None else []:
            for d in plotting_dirs():
                path = specmod.find_for_sweep(d, name)
                if path:
                    break
            if path:
                break
        if path is None:
            return None, "<default>"
        try:
            return path, path.read_text()
        except OSError:
            raise SpecError(f"{path}: no such spec file") from None

    def fingerprint(self) -> str:
        """Hash of everything the outputs depend on: event files (path, size, mtime), job metadata,
        spec text, output folder and this module's version. Equal hash -> outputs are up to date."""
        import hashlib
        import json

        keys = []
        for f in self.files:
            try:
                st = os.stat(f)
                keys.append((str(f), st.st_size, st.st_mtime_ns))
            except OSError:
                pass
        jobs = None
        if self.jobs is not None:
            keep = [c for c in self.jobs.columns if c not in logs.BULKY_JOB_COLUMNS | {"attempts", "reason",
                                                                                          "scheduler_id", "exit_code"}]
            jobs = self.jobs[keep].astype(str).to_json(orient="split")
        _, text = self.spec_source()
        blob = json.dumps([REPORT_VERSION, keys, jobs, text, str(self.out.resolve()), self.pattern_text,
                           self.config_arg, self.page])
        return hashlib.sha256(blob.encode()).hexdigest()

    def _stamp_path(self) -> Path:
        import hashlib

        return self.exp / ".cache" / f"report-{hashlib.sha1(str(self.out.resolve()).encode()).hexdigest()[:12]}.json"

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        logs.warn(msg)

    def resolve_spec(self) -> dict:
        """The spec given, else plotting/*.yaml whose sweep matches EXP's name, else a default."""
        path, _ = self.spec_source()
        if path is not None:
            spec = specmod.load(path)
        else:
            tags = sorted(str(t) for t in self.frame["tag"].unique()) if len(self.frame) else []
            spec = specmod.default_spec(tags, list(self.path_meta.columns), self.exp.name)
        self.log(f"near report: spec {spec['_file']}")
        self.spec = spec
        return spec

    # -- outputs -----------------------------------------------------------------------
    def up_to_date(self) -> bool:
        """True (and `written` filled) when a previous report made the same outputs from the same inputs."""
        import json

        self.discover()
        stamp = self._stamp_path()
        if not self.use_cache or self.force or not stamp.is_file():
            return False
        try:
            old = json.loads(stamp.read_text())
        except ValueError:
            return False
        self._fp = self.fingerprint()
        files = [Path(p) for p in old.get("written", [])]
        if old.get("fingerprint") != self._fp or not all(p.is_file() for p in files):
            return False
        self.written = files
        for w in old.get("warnings", []):
            self.warn(w)
        self.log(f"near report: outputs in {self.out} are up to date (no event file, job or spec changed)")
        return True

    def run(self) -> list[Path]:
        """Read, then write every figure and table of the spec; returns the files written."""
        if self.up_to_date():
            for p in self.written:
                self.log(f"  up to date {p}")
            return self.written
        if self.n_workers > 1:
            self.pool = logs.make_pool(self.n_workers)
        try:
            return self._run()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
                self.pool = None
            if self.cache_writer is not None:
                self.cache_writer.join()

    def _run(self) -> list[Path]:
        self.load()
        spec = self.resolve_spec()
        if self.frame.empty:
            self.warn(f"{self.exp}: no scalar data in any event file; nothing to plot")
            return []
        self.runs = select_runs(runs_table(self.path_meta), spec["select"], spec["_file"])
        frame = self.frame[self.frame["run"].isin(self.runs.index)]
        self.series = self._split(frame)
        self._drop_non_finite()
        present = set(self.series)
        tags = spec["tags"] if spec["tags"] is not None else {t: {"label": t} for t in sorted(present)}
        for tag, tspec in tags.items():
            if tag not in present and not tspec.get("optional"):
                self.warn(f"{spec['_file']}: tag '{tag}' is in no selected run (present: {', '.join(sorted(present))})")
        self.tags = {t: v for t, v in tags.items() if t in present}
        figs = spec["figures"]
        if figs is None:
            figs = specmod.default_spec([], list(self.path_meta.columns))["figures"]
        t0 = time.perf_counter()
        for fig in figs:
            self.written += self._figure(fig)
        for fut in self.draws:  # figures were drawn by the pool while the next ones were computed
            fut.result()
        self.log(f"near report: {len(self.draws)} curve figure(s) computed and drawn in {time.perf_counter() - t0:.2f}s")
        tbls = spec["tables"]
        if tbls is None:
            tbls = specmod.default_spec([], list(self.path_meta.columns))["tables"]
        for tbl in tbls:
            self.written += self._table(tbl, frame)
        if self._page_wanted(spec):
            self.written.append(self._write_page())
        for p in self.written:
            self.log(f"  wrote {p}")
        if self.use_cache:
            import json

            stamp = self._stamp_path()
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps({"fingerprint": getattr(self, "_fp", None) or self.fingerprint(),
                                         "written": [str(p) for p in self.written], "warnings": self.warnings}))
        return self.written

    def _page_wanted(self, spec: dict) -> bool:
        return self.page if self.page is not None else spec["page"]

    def _write_page(self) -> Path:
        """EXP/figures/index.html from what this report wrote, the job table and the runs."""
        from near.report import page

        counts = {}
        if self.jobs is not None and "state" in self.jobs.columns:
            from near.jobtable import STATES

            have = self.jobs["state"].value_counts()
            counts = {s: int(have.get(s, 0)) for s in STATES}
        run_dirs = self.runs["run_dir"] if "run_dir" in self.runs.columns else pd.Series(dtype=object)
        runs = []
        for name in self.runs.index:
            d = run_dirs.get(name)
            d = d if isinstance(d, str) else str(self.exp / name)
            runs.append((str(name), d if os.path.isdir(d) else None))
        title = self.spec.get("title") or self.spec.get("sweep") or self.exp.name
        data = page.PageData(f"{title}: {self.exp.name}", [p for p in self.written if p.suffix == ".png"],
                             self.tables_html, counts, page.failed_jobs(self.jobs), runs, list(self.warnings))
        return page.write(data, self.out / "index.html")

    def expected(self) -> list[Path]:
        """The files the spec promises: every curve figure for every non-optional tag in every
        format, and every table as .md/.tex/.csv (landscape figures depend on checkpoints: not listed)."""
        spec = getattr(self, "spec", None)
        if spec is None:  # an up-to-date report did not load it
            path = self.spec_source()[0]
            spec = specmod.load(path) if path else None
        if spec is None or spec["figures"] is None:
            return []
        tags = [t for t, v in (spec["tags"] or {}).items() if not v.get("optional")]
        out = []
        for fig in spec["figures"]:
            if fig["kind"] == "landscape":
                continue
            for tag in fig["tags"] or tags:
                if tag in tags:
                    out += [self.out / f"{slug(fig['name'])}_{slug(tag)}.{fmt}" for fmt in spec["formats"]]
        for tbl in spec["tables"] or []:
            out += [self.out / f"{slug(tbl['name'])}.{ext}" for ext in ("md", "tex", "csv")]
        if self._page_wanted(spec):
            out.append(self.out / "index.html")
        return out

    def _drop_non_finite(self) -> None:
        """±inf (a diverged run) becomes missing, with a warning naming the run and tag: left out of
        every curve, final value and aggregate. NaN already means 'no value' and stays silent."""
        for tag, per_run in self.series.items():
            for run, (steps, values) in per_run.items():
                bad = np.isinf(values)
                if bad.any():
                    first = int(np.flatnonzero(bad)[0])
                    self.warn(f"run {run}: tag '{tag}' has {int(bad.sum())} infinite value(s) (first {values[first]} "
                              f"at step {int(steps[first])}); left out of the curves, tables and aggregates")
                    per_run[run] = (steps, np.where(bad, np.nan, values))

    @staticmethod
    def _split(frame: pd.DataFrame) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """{tag: {run: (steps, values)}} with one sort over the whole frame (no per-group pandas)."""
        tag_codes = frame["tag"].cat.codes.to_numpy()
        run_codes = frame["run"].cat.codes.to_numpy()
        key = tag_codes.astype(np.int64) * (int(run_codes.max(initial=0)) + 1) + run_codes
        per_key = stats.split_runs(key, frame["step"].to_numpy(), frame["value"].to_numpy())
        tags, runs = frame["tag"].cat.categories, frame["run"].cat.categories
        width = int(run_codes.max(initial=0)) + 1
        out: dict[str, dict] = {}
        for k, sv in per_key.items():
            out.setdefault(str(tags[k // width]), {})[str(runs[k % width])] = sv
        return out

    def _figure(self, fig: dict) -> list[Path]:
        if fig["kind"] == "landscape":
            from near.report import landscape

            try:
                return landscape.landscape_figure(self, fig)
            except Exception as err:  # a missing checkpoint must not stop the curves and tables
                self.warn(f"{self.spec['_file']}: figure '{fig['name']}' skipped: {err}")
                return []
        if fig["kind"] in specmod.AGGREGATE_KINDS:
            return self._aggregate_figure(fig)
        hue = fig["hue"] if fig["kind"] == "curves" or fig["hue"] != "algorithm" else "ablation"
        facet = fig["facet"]
        written = []
        tags = fig["tags"] or list(self.tags)
        runs = select_runs(self.runs, fig["select"], f"{self.spec['_file']}: figures '{fig['name']}'")
        for col in [hue] + ([facet] if facet else []):
            if col not in runs.columns:
                avail = ", ".join(c for c in runs.columns if c not in ("path",))
                raise SpecError(f"{self.spec['_file']}: figure '{fig['name']}': column '{col}' is not in the "
                                f"data (available: {avail})")
        for tag in tags:
            if tag not in self.tags:
                if tag not in (self.spec["tags"] or {}):
                    raise SpecError(f"{self.spec['_file']}: figure '{fig['name']}' names tag '{tag}' not listed under tags")
                continue
            have = runs[runs.index.isin(list(self.series[tag]))]
            if have.empty:
                continue
            written += self._curves(fig, tag, have, hue, facet)
        return written

    def _curves(self, fig: dict, tag: str, runs: pd.DataFrame, hue: str, facet: str | None) -> list[Path]:
        spec, tspec, series = self.spec, self.tags[tag], self.series[tag]
        near_style = spec["style"] == "near"  # NEAR's plotter: raw values, mean +- 1 std
        smoothing = tspec["smoothing"] if tspec.get("smoothing") is not None else spec["smoothing"]
        smoothing = 0.0 if near_style else smoothing
        hue_of = pd.Series(as_text(runs[hue]), index=runs.index)
        facet_of = pd.Series(as_text(runs[facet]), index=runs.index) if facet else pd.Series([None] * len(runs), index=runs.index, dtype=object)
        hue_values = _value_order(hue_of.dropna().unique(), fig["order"])
        if fig["kind"] == "ablation":
            colours = figures.ordered_colours(hue_values)
        else:
            colours = {h: figures.color_for(h, spec["palette"]) for h in hue_values}
        facet_values = _value_order(facet_of.dropna().unique(), None) if facet else [None]
        panels = []
        for fv in facet_values:
            in_panel = runs.index if fv is None else runs.index[(facet_of == fv).to_numpy()]
            grid = stats.step_grid([series[r][0] for r in in_panel], spec["grid"]["points"], spec["grid"]["truncate"])
            curves = {}
            for hv in hue_values:
                members = [r for r in in_panel if hue_of[r] == hv]
                if not members:
                    continue
                g, mat = stats.series_matrix([series[r] for r in members], grid=grid, smoothing=smoothing)
                if near_style:
                    curves[hv] = stats.mean_std_curve(g, mat, members)
                else:
                    curves[hv] = stats.aggregate_curve(g, mat, members, spec["statistic"], spec["ci"]["level"],
                                                       spec["ci"]["n_boot"], spec["ci"]["seed"])
            panels.append({"title": fv if fv is not None else tspec["label"], "curves": curves,
                           "expert": _expert_for(tspec, fv) if fig["expert"] else None})
        title = fig["title"] or spec.get("title")
        title = f"{title}: {tspec['label']}" if title else tspec["label"]
        stat_name = "IQM" if spec["statistic"] == "iqm" and not near_style else "mean"
        band = "mean ± 1 std across runs" if near_style else f"{int(round(spec['ci']['level'] * 100))}% bootstrap CI"
        args = (panels, self.out / f"{slug(fig['name'])}_{slug(tag)}", title, spec["x_label"],
                f"{tspec['label']} ({stat_name})", colours, fig["annotate_end"], fig["col_wrap"], tuple(fig["size"]),
                fig["sharey"], tuple(spec["formats"]), spec["ci"]["level"], band)
        if self.pool is not None:  # drawn by a worker while this process computes the next figure
            self.draws.append(self.pool.submit(_draw, args))
        else:
            _draw(args)
            self.draws.append(_Done())
        return [args[1].with_suffix(f".{fmt}") for fmt in spec["formats"]]

    def _finals(self, tag: str, runs: pd.DataFrame, columns: list[str], window: int) -> pd.DataFrame:
        """One row per run of `runs` that logged `tag`: its `columns` as text and ``final``, the mean of
        its last `window` values (missing ones skipped; all missing -> NaN)."""
        series = self.series[tag]
        names = [r for r in runs.index if r in series]
        per_run = pd.DataFrame({c: as_text(runs.loc[names, c]) for c in columns}, index=names)
        per_run["final"] = [float(stats.nanmean(series[r][1][-window:])) for r in names]
        return per_run

    def _scores(self, where: str, tag: str, runs: pd.DataFrame, group: str, task: str | None, window: int):
        """rliable-style score matrices of `tag`'s finals, normalised when the tag gives expert and random."""
        for col in [group] + ([task] if task else []):
            if col not in runs.columns:
                raise SpecError(f"{where}: column '{col}' is not in the data")
        per_run = self._finals(tag, runs, [group] + ([task] if task else []), window)
        tspec = self.tags[tag]
        tasks = sorted({str(v) for v in per_run[task] if v is not None}) if task else [None]
        refs = {}
        for t in tasks:
            expert, random = _expert_for(tspec, t), _reference(tspec.get("random"), t)
            if expert is not None and random is not None:
                refs[t if t is not None else "all"] = (expert, random)
        sm = aggregates.score_matrices(per_run, group, task, refs, tspec["higher_is_better"])
        for w in sm.warnings:
            self.warn(f"{where}: tag '{tag}': {w}")
        return sm

    def _aggregate_figure(self, fig: dict) -> list[Path]:
        from near.report import aggregate_figures

        spec = self.spec
        where = f"{spec['_file']}: figure '{fig['name']}'"
        runs = select_runs(self.runs, fig["select"], where)
        written = []
        level, reps, seed = spec["ci"]["level"], spec["ci"]["n_boot"], spec["ci"]["seed"]
        for tag in fig["tags"] or list(self.tags):
            if tag not in self.tags:
                continue
            sm = self._scores(where, tag, runs, fig["hue"], fig["facet"], fig["window"])
            order = _value_order(list(sm.scores), fig["order"])
            if not order:
                continue
            colours = {g: figures.color_for(g, spec["palette"]) for g in order}
            label = _score_label(self.tags[tag], sm)
            base = self.out / f"{slug(fig['name'])}_{slug(tag)}"
            title = f"{fig['title'] or self.tags[tag]['label']} ({len(sm.tasks)} task(s): {', '.join(sm.tasks)})"
            if fig["kind"] == "aggregate":
                est = aggregates.interval_estimates({g: sm.scores[g] for g in order}, tuple(fig["metrics"]), level,
                                                    reps, seed)
                if sm.oriented:  # report the tag's own values, not the negated ones
                    est = {g: {m: _unorient(v, m) for m, v in e.items()} for g, e in est.items()}
                written += aggregate_figures.interval_figure(est, order, colours, tuple(fig["metrics"]), label, title,
                                                             base, tuple(spec["formats"]), level)
            elif fig["kind"] == "profile":
                flat = np.concatenate([m.ravel() for m in sm.scores.values()])
                lo, hi = float(flat.min()), float(flat.max())
                pad = 0.05 * (hi - lo) or 0.05  # start below every run, end above every run
                taus = np.linspace(lo - pad, hi + pad, fig["taus"])
                prof = aggregates.performance_profiles({g: sm.scores[g] for g in order}, taus, level, reps, seed)
                shown = -taus if sm.oriented else taus
                written += aggregate_figures.profile_figure(prof, shown, order, colours, label, sm.oriented, title,
                                                            base, tuple(spec["formats"]), level)
            else:
                pairs = self._pairs(fig, sm, where)
                poi = aggregates.probability_of_improvement(sm.scores, pairs, level, reps, seed)
                written += aggregate_figures.improvement_figure(poi, pairs, colours, title, base,
                                                                tuple(spec["formats"]), level)
        return written

    def _pairs(self, item: dict, sm, where: str) -> list[tuple[str, str]]:
        pairs = [(str(x), str(y)) for x, y in item["pairs"]]
        missing = sorted({g for p in pairs for g in p if g not in sm.scores})
        if missing:
            self.warn(f"{where}: no aggregate scores for {', '.join(missing)} (have: {', '.join(sm.scores)}); "
                      "their pairs are left out")
        return [p for p in pairs if p[0] in sm.scores and p[1] in sm.scores]

    def _aggregate_table(self, tbl: dict) -> list[Path]:
        spec = self.spec
        where = f"{spec['_file']}: table '{tbl['name']}'"
        runs = select_runs(self.runs, tbl["select"], where)
        group = (tbl["by"] or ["algorithm"])[0]
        level, reps, seed, digits = spec["ci"]["level"], spec["ci"]["n_boot"], spec["ci"]["seed"], tbl["digits"]
        tidy, cells = [], {}
        for tag in tbl["tags"] or list(self.tags):
            if tag not in self.tags:
                continue
            sm = self._scores(where, tag, runs, group, tbl["task"], tbl["window"])
            if not sm.scores:
                continue
            kind = "normalised" if sm.normalized else "raw"
            label = self.tags[tag]["label"]
            if tbl["kind"] == "aggregate":
                est = aggregates.interval_estimates(sm.scores, tuple(tbl["metrics"]), level, reps, seed)
                for g, per_metric in est.items():
                    for m, v in per_metric.items():
                        v = _unorient(v, m) if sm.oriented else v
                        tidy.append({group: g, "tag": tag, "metric": m, "scores": kind, "runs": sm.scores[g].shape[0],
                                     "tasks": len(sm.tasks), "value": v[0], "ci_low": v[1], "ci_high": v[2]})
                        cells.setdefault(g, {})[f"{label} {m.upper() if m == 'iqm' else m}"] = \
                            tables.interval_cell(*v, digits)
            else:
                for (x, y), v in aggregates.probability_of_improvement(sm.scores, self._pairs(tbl, sm, where),
                                                                       level, reps, seed).items():
                    tidy.append({"x": x, "y": y, "tag": tag, "scores": kind, "value": v[0], "ci_low": v[1],
                                 "ci_high": v[2]})
                    cells.setdefault(f"P({x} > {y})", {})[label] = tables.interval_cell(*v, digits)
        if not tidy:
            self.warn(f"{where} has no data")
            return []
        first = group if tbl["kind"] == "aggregate" else "pair"
        table = pd.DataFrame([{first: k, **v} for k, v in cells.items()])
        what = (f"{', '.join(m.upper() if m == 'iqm' else m for m in tbl['metrics'])} over all runs and tasks"
                if tbl["kind"] == "aggregate" else "probability of improvement, averaged over tasks")
        caption = (f"{what.capitalize()} of final scores (mean of the last {tbl['window']} values per run; "
                   f"normalised (x - random) / (expert - random) where the spec gives both), "
                   f"{int(level * 100)}% stratified bootstrap CI ({reps} resamples).")
        self.tables_html.append((tbl["name"], caption, table))
        return tables.write_frames(table, pd.DataFrame(tidy), self.out / slug(tbl["name"]), caption)

    def _table(self, tbl: dict, frame: pd.DataFrame) -> list[Path]:
        if tbl["kind"] != "final":
            return self._aggregate_table(tbl)
        spec = self.spec
        runs = select_runs(self.runs, tbl["select"], f"{spec['_file']}: tables '{tbl['name']}'")
        by = tbl["by"] or [c for c in ("algorithm", "motion", "ablation") if c in runs.columns] or ["run"]
        for col in by:
            if col not in runs.columns:
                raise SpecError(f"{spec['_file']}: table '{tbl['name']}': column '{col}' is not in the data")
        parts = []
        for tag in tbl["tags"] or list(self.tags):
            if tag not in self.tags:
                continue
            per_run = self._finals(tag, runs, by, tbl["window"])
            if per_run.empty:
                continue
            summ = stats.summarize_finals(per_run, by, spec["ci"]["level"], spec["ci"]["n_boot"], spec["ci"]["seed"])
            parts.append(summ.assign(tag=tag))
        if not parts:
            self.warn(f"{spec['_file']}: table '{tbl['name']}' has no data")
            return []
        summary = pd.concat(parts, ignore_index=True)
        labels = {t: v["label"] for t, v in self.tags.items()}
        caption = (f"Final performance (mean of the last {tbl['window']} logged values per run; "
                   f"mean over runs with {int(spec['ci']['level'] * 100)}% bootstrap CI).")
        self.tables_html.append((tbl["name"], caption, tables.wide(summary, by, tbl["digits"], labels)))
        return tables.write_tables(summary, by, self.out / slug(tbl["name"]), tbl["digits"], labels, caption=caption)


def _draw(args: tuple) -> None:
    figures.curves_figure(*args)


class _Done:
    """Stands in for the future of a figure drawn in this process."""

    def result(self) -> None:
        return None


def run_report(exp: Path, spec: Path | None = None, out: Path | None = None, workers: int | None = None,
               use_cache: bool = True, log=print, force: bool = False, pattern: str | None = None,
               config: list | dict | None = None) -> Report:
    """Regenerate every figure and table for experiment folder `exp`; returns the finished Report.
    `pattern`/`config`: metadata of runs under no job (see near.report.runmeta)."""
    rep = Report(exp, spec, out, workers, use_cache, log, force=force, pattern=pattern, config=config)
    rep.run()
    return rep
