"""Importing runs near did not launch into a job table, so that old and new runs report together.

Each run dir (found as `near report` finds runs under no job: a run pattern over its path, or the
folder holding ``summaries/``) becomes one job through the job table's public API only: ``add``
(metadata from the pattern's fields and the run's own config as parameters) and then
``transition(job_id, DONE, reason="imported from <dir>")``. ``runs/<job_id>`` is a symlink to
the run's own folder, so nothing is copied or moved and the report reads the run where it lies.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from near.errors import NearError


@dataclass
class ImportSummary:
    """What an import did."""

    target: Path
    runs: int
    new: int
    existing: int
    warnings: list[str]


def import_runs(root: str | os.PathLike, exp: str | os.PathLike, pattern: str | None = None,
                config: list[str] | dict | None = None, *, stage: str = "rl", sweep: str | None = None
                ) -> ImportSummary:
    """Record every run under `root` as a done job of the table in `exp` (created when absent).

    Importing the same runs again adds nothing: a job's id is a hash of its run dir's real path.
    """
    from near.jobtable import DONE, PENDING, JobSpec, JobTable
    from near.report import logs, runmeta

    root = Path(root).resolve()
    if not root.is_dir():
        raise NearError(f"{root}: no such folder of runs")
    compiled = runmeta.compile_pattern(pattern) if pattern else None
    keys = runmeta.parse_config_keys(config)
    files = [str(p) for p in logs.find_event_files([root])]
    if not files:
        raise NearError(f"{root}: no tensorboard event file (events.out.tfevents.*) under it")
    found, warnings = runmeta.bare_runs(files, root, compiled, keys)
    if found.empty:
        raise NearError(f"{root}: no run dir matches pattern {pattern!r}" + (f" ({warnings[0]})" if warnings else ""))
    exp = Path(exp)
    specs, sources = [], {}
    fields = list(compiled.fields) if compiled else []
    for run, group in found.groupby("run", sort=True):
        source = (root / run).resolve()
        params = {c: v for c, v in group.iloc[0].items() if c not in ("path", "run") and isinstance(v, str)}
        params["source"] = str(source)
        job_id = hashlib.sha256(f"import\0{source}".encode()).hexdigest()[:12]
        sources[job_id] = source
        note = shlex.quote(f"imported from {source}: near did not launch this run and cannot re-run it")
        specs.append(JobSpec(job_id=job_id, stage=stage, command=f"echo {note} >&2; exit 2", params=params,
                             sweep=sweep or exp.name, max_attempts=1, point=f"{run}"))
    table = JobTable.open_or_create(exp, sweep=sweep or exp.name)
    try:
        axes = list(dict.fromkeys(fields + [a for a in table.axes() if a not in fields]))
        result = table.add(specs, axes=axes or None)
        for job_id, source in sources.items():
            link = Path(table.exp_dir) / "runs" / job_id
            if not link.exists() and not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source, target_is_directory=True)
            # also completes an import that stopped between add and here
            table.transition(job_id, DONE, reason=f"imported from {source}", expect=[PENDING])
    finally:
        table.close()
    return ImportSummary(exp, len(specs), result.new, result.existing, warnings)
