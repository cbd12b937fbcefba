"""pandas views of the job table: ``to_frame()`` (the read view; the table is the store) and
``export()`` to CSV or parquet. Bound as methods of :class:`~near.jobtable.table.JobTable`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from near.errors import TableError
from near.jobtable.connection import reads
from near.jobtable.queries import corrupt, deps_map, unknown_state
from near.jobtable.records import _fast_resolve, _label
from near.jobtable.states import STATES

if TYPE_CHECKING:
    from near.jobtable.table import JobTable


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


@reads
def to_frame(table: JobTable):
    """pandas DataFrame, one row per job: job_id, sweep, stage, state, reason, exit_code, attempts,
    max_attempts, run_dir (absolute), command (resolved), command_template, scheduler_id, point,
    created/updated/started/finished (UTC timestamps), deps (JSON ref -> job id), resources (JSON),
    plus one column per sweep axis (missing where a job does not use the axis) and any other
    parameter a job carries (e.g. keys passed through ``needs.with``)."""
    import pandas as pd

    axes = table.axes()
    cols = ["job_id", "sweep", "stage", "state", "reason", "exit_code", "attempts", "max_attempts",
            "scheduler_id", "created", "updated", "started", "finished", "command_template", "params",
            "resources", "point"]
    rows = table._conn.execute(f"SELECT {', '.join(cols)} FROM jobs ORDER BY seq").fetchall()
    deps = deps_map(table)
    df = pd.DataFrame.from_records(rows, columns=cols)
    unknown = set(df["state"].unique()) - set(STATES)
    if unknown:
        raise unknown_state(table, sorted(map(str, unknown))[0])
    ids = df["job_id"].tolist()
    runs = os.path.join(table.exp_dir, "runs") + os.sep
    loads = json.loads
    try:
        params = [loads(p) for p in df["params"].tolist()]
    except ValueError as err:
        bad = next(j for j, p in zip(ids, df["params"].tolist()) if not _is_json(p))
        raise corrupt(table, bad, "params", err) from None
    dep_list = [deps.get(j, {}) for j in ids]
    df["run_dir"] = [runs + j for j in ids]
    df["command"] = [_fast_resolve(t, j, table.exp_dir, d)
                     for t, j, d in zip(df["command_template"].tolist(), ids, dep_list)]
    df["deps"] = [json.dumps(d, sort_keys=True) if d else "{}" for d in dep_list]
    df["point"] = [pt or _label(pm) for pt, pm in zip(df["point"].tolist(), params)]
    extra = pd.DataFrame.from_records(params, columns=None) if params else pd.DataFrame()
    for a in axes:
        if a not in extra.columns:
            extra[a] = None
    extra = extra[axes + [c for c in extra.columns if c not in axes and c not in df.columns]]
    df = df.drop(columns=["params"])
    order = ["job_id", "sweep", "stage", "state", "reason", "exit_code", "attempts", "max_attempts",
             "run_dir", "command", "command_template", "scheduler_id", "point", "created", "updated",
             "started", "finished", "deps", "resources"]
    df = pd.concat([df[order].reset_index(drop=True), extra.reset_index(drop=True)], axis=1)
    for col in ("created", "updated", "started", "finished"):
        df[col] = pd.to_datetime(df[col], unit="s", utc=True)
    df["exit_code"] = df["exit_code"].astype("Int64")
    return df

def export(table: JobTable, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``to_frame()`` to CSV or parquet (``fmt`` from the suffix if omitted)."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    df = to_frame(table)
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        # axis columns may mix types across axes' values; parquet needs one type per column
        for col in df.columns:
            if df[col].dtype == object:
                types = {type(v) for v in df[col] if v is not None and v == v}
                if len(types) > 1:
                    df[col] = df[col].map(lambda v: None if v is None or v != v else str(v))
        df.to_parquet(path, index=False)
    else:
        raise TableError(f"export: unknown format {fmt!r} (csv or parquet)")
    return path
