"""Importing runs near did not launch into a job table, so that old and new runs report together.

Each run dir (found as `near report` finds runs under no job: a run pattern over its path, or the
folder holding ``summaries/``) becomes one job through the job table's public API only: ``add``
(metadata from the pattern's fields and the run's own config as parameters) and then
``transition(job_id, DONE, reason="imported from <dir>")``. Imported runs are read-only to near:
the job's ``source`` parameter names the run's own folder, which the report reads where it lies;
``runs/<job_id>`` is a near-owned folder (holding only a ``source`` link to it), so whatever near
writes for the job later (a reset, a re-run's logs and outcome files) never lands in the foreign
folder. A run's stage is its ``--stage-from`` field (or a pattern field named ``stage``): values
naming NCSN become ``ncsn``, so energy-model runs are not mixed with RL runs.
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
                config: list[str] | dict | None = None, *, stage: str = "rl", sweep: str | None = None,
                stage_from: str | None = None) -> ImportSummary:
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
    stage_field = stage_from or ("stage" if "stage" in fields else None)
    if stage_field and stage_field not in found.columns:
        raise NearError(f"--stage-from {stage_field}: no pattern field or --config column of that name "
                        f"(have: {', '.join(c for c in found.columns if c not in ('path', 'run')) or 'none'})")
    for run, group in found.groupby("run", sort=True):
        source = (root / run).resolve()
        params = {c: v for c, v in group.iloc[0].items() if c not in ("path", "run") and isinstance(v, str)}
        params["source"] = str(source)
        run_stage = stage_of(params.get(stage_field), stage) if stage_field else stage
        job_id = hashlib.sha256(f"import\0{source}".encode()).hexdigest()[:12]
        sources[job_id] = source
        note = shlex.quote(f"imported from {source}: near did not launch this run and cannot re-run it")
        specs.append(JobSpec(job_id=job_id, stage=run_stage, command=f"echo {note} >&2; exit 2", params=params,
                             sweep=sweep or exp.name, max_attempts=1, point=f"{run}"))
    table = JobTable.open_or_create(exp, sweep=sweep or exp.name)
    try:
        axes = list(dict.fromkeys(fields + [a for a in table.axes() if a not in fields]))
        result = table.add(specs, axes=axes or None)
        for job_id, source in sources.items():
            own = Path(table.exp_dir) / "runs" / job_id
            own.mkdir(parents=True, exist_ok=True)
            link = own / "source"
            if not link.exists() and not link.is_symlink():
                link.symlink_to(source, target_is_directory=True)
            # also completes an import that stopped between add and here
            table.transition(job_id, DONE, reason=f"imported from {source}", expect=[PENDING])
    finally:
        table.close()
    return ImportSummary(exp, len(specs), result.new, result.existing, warnings)


def stage_of(value, default: str) -> str:
    """A run's stage from a field value: anything naming NCSN (``NCSN``, ``HumanoidNCSN``) is ``ncsn``;
    another value is itself in lower case; none is `default`."""
    if value is None or str(value) == "":
        return default
    text = str(value)
    return "ncsn" if "ncsn" in text.lower() else text.lower()
