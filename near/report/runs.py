"""Run selection (PURE): one row of metadata per run, and the runs a spec's `select` keeps.

Used by the curve/table pipeline and by the learnt-reward figures alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from near.errors import SpecError

# Per-point columns of the scalars frame; everything else in a metadata frame describes a run.
POINT_COLUMNS = {"path", "tag", "step", "value", "wall_time"}


def runs_table(meta: pd.DataFrame) -> pd.DataFrame:
    """One row per run with its metadata, as plain objects; index = run name.

    `meta` is a `logs.path_metadata` frame (one row per event file) or any frame with a `run` column.
    """
    cols = [c for c in meta.columns if c not in POINT_COLUMNS]
    first = ~meta["run"].duplicated().to_numpy()
    runs = meta.loc[first, cols]
    runs = pd.DataFrame({c: runs[c].astype(object).to_numpy() for c in cols})
    runs["run"] = runs["run"].astype(str)
    return runs.set_index(runs["run"].to_numpy())


def as_text(values) -> list:
    """Metadata values as text for matching and labels; missing stays None."""
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


def select_runs(runs: pd.DataFrame, select: dict, where: str) -> pd.DataFrame:
    """Runs whose metadata match every `select` entry (value or list of values; compared as text)."""
    for key, want in select.items():
        if key not in runs.columns:
            avail = ", ".join(c for c in runs.columns if c != "run")
            raise SpecError(f"{where}: key 'select.{key}' is not a column of the runs (available: {avail})")
        wanted = {str(v) for v in (want if isinstance(want, list) else [want])}
        runs = runs[[v in wanted for v in as_text(runs[key])]]
    return runs
