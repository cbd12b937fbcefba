"""`near report EXP`: event files -> RunData -> every figure and table kind the spec names -> page.

`Report` holds one report run's inputs and results; the work is done by plain functions: reading
(`rundata.build`), the kinds of the registry (`registry`), the page (`page`). An up-to-date stamp
(hash of every input) makes an unchanged report write nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from near.errors import SpecError
from near.report import logs, runmeta, spec as specmod
from near.report.figures import slug
from near.report.registry import Output, figure_kinds, table_kinds
from near.report.rundata import RunData, RunOptions, build, discover

# Bump when a change of this package changes what a report draws (invalidates up-to-date stamps).
REPORT_VERSION = 4


def load_jobs(exp: Path) -> pd.DataFrame | None:
    """The sweep's job table as a frame, or None when EXP has no jobs.db (a bare folder of runs)."""
    db = Path(exp) / "jobs.db"
    if not db.is_file():
        return None
    from near.jobtable import JobTable

    with JobTable.open(db, readonly=True) as table:
        return table.to_frame()


def plotting_dirs() -> list[Path]:
    """Where specs are looked up: ./plotting, then the checkout's plotting/ next to the package."""
    here = Path(__file__).resolve().parents[2] / "plotting"
    cwd = Path.cwd() / "plotting"
    return [cwd] if cwd.resolve() == here else [cwd, here]


def draw_in_processes(workers: int | None, figures: int) -> int:
    """Processes to draw in: as many as there are idle cores (the load average says how many other
    work takes), and one -- this process -- when a pool would only compete for busy cores."""
    cores = logs.usable_cores()
    idle = cores - os.getloadavg()[0] if hasattr(os, "getloadavg") else cores
    n = min(workers or cores, cores, max(1, int(idle + 0.5)))
    return n if n >= 2 and figures >= 8 else 1


class Report:
    """One report run: its inputs (experiment, spec, output folder, run options) and what it did
    (`data`, `written`, `warnings`)."""

    def __init__(self, exp: Path, spec_path: Path | None = None, out: Path | None = None,
                 workers: int | None = None, use_cache: bool = True, log: Callable = print,
                 jobs: pd.DataFrame | None = None, force: bool = False, pattern: str | list | None = None,
                 config: list | dict | None = None, page: bool | None = None, group_by: list[str] | None = None,
                 config_files: list[str] | None = None, scorers: dict | None = None):
        self.exp = Path(exp).resolve()
        if not self.exp.is_dir():
            raise SpecError(f"{exp}: no such experiment folder")
        self.spec_path = spec_path
        self.out = Path(out) if out else self.exp / "figures"
        self.workers = workers
        self.use_cache = use_cache
        self.force = force
        self.log = log
        self.jobs = jobs if jobs is not None else load_jobs(self.exp)
        self.pattern = pattern
        self.config = config
        self.config_files = config_files
        self.page = page
        self.group_by = group_by
        self.scorers = scorers or {}
        self.files: list[Path] = discover(self.exp, self.jobs)
        self.spec: specmod.ReportSpec | None = None
        self.data: RunData | None = None
        self.frame: pd.DataFrame | None = None
        self.written: list[Path] = []  # files this run wrote
        self.unchanged: list[Path] = []  # outputs of an earlier run that are still up to date
        self.warnings: list[str] = []
        self.captions: dict[str, str] = {}
        self._source: tuple[Path | None, str] | None = None

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run with scalars (after the spec's selection)."""
        return self.data.runs

    # -- inputs ------------------------------------------------------------------------
    def spec_source(self) -> tuple[Path | None, str]:
        """(spec file or None for the derived default, its text) -- what the outputs depend on."""
        if self._source is None:
            self._source = self._find_spec()
        return self._source

    def _find_spec(self) -> tuple[Path | None, str]:
        path = Path(self.spec_path) if self.spec_path else None
        names = [self.exp.name]  # the sweep's name: the job table's, else the folder's
        if self.jobs is not None and "sweep" in self.jobs.columns:
            names = [str(n) for n in self.jobs["sweep"].dropna().unique() if str(n)] + names
        for name in names if path is None else []:
            path = next((p for d in plotting_dirs() if (p := specmod.find_for_sweep(d, name))), None)
            if path:
                break
        if path is None:
            return None, "<default>"
        try:
            return path, path.read_text()
        except OSError:
            raise SpecError(f"{path}: no such spec file") from None

    def run_options(self) -> RunOptions:
        """Run patterns, config keys and files for runs under no job: the caller's, else the spec's `runs`."""
        path, _ = self.spec_source()
        runs = specmod.load(path).runs if path is not None else {}
        given = self.pattern if self.pattern else runs.get("pattern")
        texts = [given] if isinstance(given, str) else list(given or [])
        where = "--pattern" if self.pattern else f"{path}: key 'runs.pattern'"
        keys = runmeta.parse_config_keys(self.config if self.config is not None else runs.get("config"),
                                         "--config" if self.config is not None else f"{path}: key 'runs.config'")
        files = self.config_files if self.config_files is not None else runs.get("config_files")
        files = [files] if isinstance(files, str) else list(files or [])
        return RunOptions([runmeta.compile_pattern(t, where) for t in texts], keys, files)

    def fingerprint(self) -> str:
        """Hash of everything the outputs depend on: event files (path, `logs.file_key`), a folder of
        runs' empty summaries folders, job metadata, spec text, output folder, options and this
        module's version."""
        keys = []
        for f in self.files:
            try:
                st = os.stat(f)
                keys.append((str(f), *logs.file_key(st)))
            except OSError:
                pass
        jobs = None
        if self.jobs is None:  # runs without event files are named on the page: a new one is a change
            keys.append([str(p) for p in logs.empty_summaries([self.exp])])
        else:
            keep = [c for c in self.jobs.columns if c not in logs.BULKY_JOB_COLUMNS | {"attempts", "reason",
                                                                                          "scheduler_id", "exit_code"}]
            jobs = self.jobs[keep].astype(str).to_json(orient="split")
        _, text = self.spec_source()
        blob = json.dumps([REPORT_VERSION, keys, jobs, text, str(self.out.resolve()), self.pattern, self.config,
                           self.config_files, self.page, self.group_by, sorted(self.scorers)], default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _stamp_path(self) -> Path:
        return self.exp / ".cache" / f"report-{hashlib.sha1(str(self.out.resolve()).encode()).hexdigest()[:12]}.json"

    def warn(self, msg: str) -> None:
        """Record and print a warning (each text once)."""
        if msg not in self.warnings:
            self.warnings.append(msg)
            logs.warn(msg)

    # -- the run -----------------------------------------------------------------------
    def up_to_date(self) -> bool:
        """True (and `unchanged` filled) when a previous report made the same outputs from the same inputs."""
        stamp = self._stamp_path()
        if not self.use_cache or self.force or not stamp.is_file():
            return False
        try:
            old = json.loads(stamp.read_text())
        except ValueError:
            return False
        files = [Path(p) for p in old.get("written", [])]
        if old.get("fingerprint") != self.fingerprint() or not all(p.is_file() for p in files):
            return False
        self.unchanged = files
        self.expected_files = [Path(p) for p in old.get("expected", [])]
        for w in old.get("warnings", []):
            self.warn(w)
        return True

    def load(self) -> pd.DataFrame:
        """Read every event file (through the cache) into `data`; returns the tidy frame."""
        path, _ = self.spec_source()
        select = specmod.load(path).select if path is not None else {}
        cache = self.exp / ".cache" / "scalars" if self.use_cache else None
        self.data, self.frame, self._writer = build(self.exp, self.jobs, self.files, self.run_options(), cache,
                                                    self.workers or os.cpu_count() or 1, self.warn, self.log,
                                                    select=select, where=str(path))
        return self.frame

    def resolve_spec(self) -> specmod.ReportSpec:
        """The spec given, else plotting/*.yaml whose sweep matches EXP's name, else one from the data."""
        path, _ = self.spec_source()
        if path is not None:
            self.spec = specmod.load(path)
        else:
            self.spec = specmod.default_spec(self.data.tags(), default_group_by(self.data, self.warn), self.exp.name)
        self.log(f"near report: spec {self.spec.file}")
        return self.spec

    def run(self) -> list[Path]:
        """Read, then write every figure and table of the spec; returns the files written this time."""
        if self.up_to_date():
            self.log(f"near report: {len(self.unchanged)} output(s) in {self.out} are up to date "
                     "(no event file, job, spec or option changed); nothing written")
            return []
        self._writer = None
        try:
            self._run()
        finally:
            if self._writer is not None:
                self._writer.join()
        return self.written

    def _run(self) -> None:
        self.log(f"near report: {self.exp}: {len(self.files)} event file(s) in "
                 f"{len(self.jobs) if self.jobs is not None else 'no'} job(s)")
        self.load()
        spec = self.resolve_spec()
        if not self.data.series and not self.data.unselected:  # an empty selection is warned about where made
            self.warn(f"{self.exp}: no scalar data in any event file; nothing to plot")
        present = set(self.data.series)
        if spec.tags is None:
            spec.tags = {t: specmod._tag(t, {}, spec.file) for t in sorted(present)}
        for tag, tspec in spec.tags.items():
            if tag not in present and not tspec.optional and present:
                self.warn(f"{spec.file}: tag '{tag}' is in no selected run (present: {', '.join(sorted(present))})")
        figs = spec.figures if spec.figures is not None else specmod.default_spec([], spec.group_by or []).figures
        tbls = spec.tables if spec.tables is not None else specmod.default_spec([], spec.group_by or []).tables
        t0 = time.perf_counter()
        out, pool = self._output(spec, draw_in_processes(self.workers, len(figs) * len(spec.tags)))
        try:
            if self.data.series:
                for fig in figs:
                    self.written += figure_kinds()[fig.kind](self.data, fig, out)
            for fut in self._pending:
                fut.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self.log(f"near report: {len(self.written)} figure file(s) in {time.perf_counter() - t0:.2f}s")
        if self.data.series:
            for tbl in tbls:
                self.written += table_kinds()[tbl.kind](self.data, tbl, out)
        self.captions = out.captions
        self.expected_files = self.expected()
        if self._page_wanted():
            self.written.append(self._write_page(out))
        for p in self.written:
            self.log(f"  wrote {p}")
        if self.use_cache:
            stamp = self._stamp_path()
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps({"fingerprint": self.fingerprint(), "warnings": self.warnings,
                                         "written": [str(p) for p in self.written],
                                         "expected": [str(p) for p in self.expected_files]}))

    def _output(self, spec: specmod.ReportSpec, workers: int) -> tuple[Output, object]:
        self._pending: list = []
        pool = logs.make_pool(workers) if workers > 1 else None

        def submit(fn, args):
            if pool is None:
                fn(*args)
            else:  # drawn by a worker while this process computes the next figure
                self._pending.append(pool.submit(fn, *args))

        return Output(self.out, spec, self.warn, submit, self.scorers, self.group_by), pool

    def _page_wanted(self) -> bool:
        return self.page if self.page is not None else self.spec.page

    def _write_page(self, out: Output) -> Path:
        """EXP/figures/index.html from what this report wrote, the job table and the runs."""
        from near.report import page

        counts = {}
        if self.jobs is not None and "state" in self.jobs.columns:
            from near.jobtable import STATES

            have = self.jobs["state"].value_counts()
            counts = {s: int(have.get(s, 0)) for s in STATES}
        title = self.spec.title or self.spec.sweep or self.exp.name
        if self.exp.name not in title:
            title = f"{title} ({self.exp.name})"
        data = page.PageData(title, [p for p in self.written if p.suffix == ".png"], out.tables_html, counts,
                             page.failed_jobs(self.jobs), page.run_rows(self.data, self.jobs), list(self.warnings),
                             captions=out.captions, left_out=[(x.run, x.reason) for x in self.data.left_out],
                             filters=[f for f in self.data.fields if f in self.data.runs.columns])
        return page.write(data, self.out / "index.html")

    def expected(self) -> list[Path]:
        """The files the spec promises: every curve/score figure for every non-optional tag in every
        format and every table as .md/.tex/.csv (landscapes depend on checkpoints: not listed)."""
        spec = self.spec
        if spec is None:
            return list(getattr(self, "expected_files", []))
        tags = [t for t, v in (spec.tags or {}).items() if not v.optional]
        out = []
        for fig in spec.figures or []:
            if fig.kind == "landscape":
                continue
            for tag in fig.tags or tags:
                if tag in tags:
                    out += [self.out / f"{slug(fig.name)}_{slug(tag)}.{fmt}" for fmt in spec.formats]
        for tbl in spec.tables or []:
            out += [self.out / f"{slug(tbl.name)}.{ext}" for ext in ("md", "tex", "csv")]
        if self._page_wanted():
            out.append(self.out / "index.html")
        return out


def default_group_by(data: RunData, warn: Callable[[str], None]) -> list[str]:
    """Fields to group by when no spec names any: algorithm, motion, ablation first, then every other
    field that takes more than one value (replicate fields such as seed are pooled, never grouped);
    more than three: the rest are pooled, with a warning naming them. When none varies, the first
    field there is (one group of all runs, named by its value); with no field at all, each run is
    its own curve."""
    from near.report.rundata import REPLICATE_FIELDS
    from near.report.runs import as_text

    runs = data.runs
    present = [f for f in data.fields if f in runs.columns and f not in REPLICATE_FIELDS]
    varying = [f for f in present if len({v for v in as_text(runs[f]) if v is not None}) > 1]
    if not varying:
        return present[:1] or ["run"]
    first = [f for f in ("algorithm", "motion", "ablation") if f in varying]
    fields = first + [f for f in varying if f not in first]
    if len(fields) > 3:
        warn(f"runs differ in {', '.join(fields)}; the default figures group by {', '.join(fields[:3])} and pool "
             f"runs across {', '.join(fields[3:])} (name the fields with --group-by or group_by:)")
    return fields[:3]


def run_report(exp: Path, spec: Path | None = None, out: Path | None = None, workers: int | None = None,
               use_cache: bool = True, log=print, force: bool = False, pattern: str | list | None = None,
               config: list | dict | None = None, group_by: list[str] | None = None,
               config_files: list[str] | None = None, scorers: dict | None = None) -> Report:
    """Regenerate every figure and table for experiment folder `exp`; returns the finished Report.
    `pattern`/`config`/`config_files`: metadata of runs under no job (see near.report.runmeta)."""
    rep = Report(exp, spec, out, workers, use_cache, log, force=force, pattern=pattern, config=config,
                 group_by=group_by, config_files=config_files, scorers=scorers)
    rep.run()
    return rep
