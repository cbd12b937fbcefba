"""Event files of a sweep -> one tidy scalars frame, cached in parquet, read in parallel.

Cache layout (``EXP/.cache/scalars/``): ``scalars.parquet`` holds every point of every event file
(columns path, tag, step, value, wall_time) and ``index.json`` maps each event file's absolute path
to the `file_key` it had when read, plus any warning. A report stats every event file and re-reads
only those whose path or key changed; nothing changed -> one parquet read.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

CACHE_VERSION = 3
SKIP_DIRS = {".cache", "figures", "nn", "__pycache__"}
# Job-table columns not worth repeating on every scalar row (look them up in the job table instead).
BULKY_JOB_COLUMNS = {"command", "command_template", "deps", "resources", "created", "updated", "started", "finished"}


@dataclass
class ReadReport:
    """What a load did: how many files came from the cache, how many were decoded, warnings."""

    files: int = 0
    read: int = 0
    cached: int = 0
    points: int = 0
    warnings: list[str] = field(default_factory=list)
    # per event file: {"points": n, "digest": content hash, "warning": text or None}
    file_info: dict[str, dict] = field(default_factory=dict)
    writer: object = None  # thread still writing the cache (background_write=True)


def file_key(st: os.stat_result) -> tuple[int, int, int, int]:
    """What says a file's content may have changed: size, mtime, and also ctime and inode, because
    a file rewritten to the same size keeps its old mtime when that is restored (``cp -p``,
    ``rsync -t``, ``touch -r``), while the kernel sets ctime on every write and a replacing file
    has an inode of its own."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def is_event_file(name: str) -> bool:
    """True for tensorboard event file names (``events.out.tfevents.*``)."""
    return "tfevents" in name


def find_event_files(roots: list[Path]) -> list[Path]:
    """Every event file under each root, searched recursively (absolute, sorted, unique)."""
    found: set[str] = set()
    for root in roots:
        root = Path(root)
        if root.is_file():
            if is_event_file(root.name):
                found.add(str(root.resolve()))
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            for name in filenames:
                if is_event_file(name):
                    found.add(os.path.abspath(os.path.join(dirpath, name)))
    return [Path(p) for p in sorted(found)]


def empty_summaries(roots: list[Path]) -> list[Path]:
    """Every ``summaries`` folder under each root with no event file anywhere inside it (sorted): a run
    dir in NEAR's or rl-games' layout whose logs were not kept."""
    found = []
    for root in roots:
        if not Path(root).is_dir():
            continue
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            if "summaries" in dirnames:
                folder = Path(dirpath) / "summaries"
                if not any(is_event_file(n) for _, _, names in os.walk(folder) for n in names):
                    found.append(folder.resolve())
    return sorted(found)


def _read_one(path: str) -> tuple[str, dict]:
    """Decode one file into plain arrays (runs in a worker process)."""
    from near.report.events import read_event_file

    try:
        data = read_event_file(path)
    except OSError as err:
        return path, {"error": f"{path}: cannot be read ({err})"}
    return path, {
        "tags": data.tags,
        "tag_index": data.tag_index,
        "step": data.step,
        "value": data.value,
        "wall_time": data.wall_time,
        "warning": data.warning,
        "digest": data.digest,
    }


def make_pool(workers: int):
    """A process pool for decoding (and drawing); forkserver, so no thread state is forked."""
    import multiprocessing as mp

    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("forkserver"))


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _read_many(paths: list[str], workers: int, pool=None) -> list[tuple[str, dict]]:
    """Decode files, in a process pool when there are enough of them and cores to pay for it (on one
    or two cores a pool's start-up and transfers cost more than they save)."""
    workers = min(workers, usable_cores())
    if (pool is None and workers <= 2) or len(paths) < 8:
        return [_read_one(p) for p in paths]
    chunk = max(1, len(paths) // (max(workers, 1) * 4))
    if pool is not None:
        return list(pool.map(_read_one, paths, chunksize=chunk))
    with make_pool(min(workers, len(paths))) as own:
        return list(own.map(_read_one, paths, chunksize=chunk))


def _to_table(results: list[tuple[str, dict]]):
    """Concatenate decoded files into one arrow table with dictionary-encoded path and tag."""
    import pyarrow as pa

    tag_ids: dict[str, int] = {}
    paths, path_idx, tag_idx, steps, values, walls = [], [], [], [], [], []
    for k, (path, res) in enumerate(results):
        paths.append(path)
        n = len(res["step"])
        local = np.array([tag_ids.setdefault(t, len(tag_ids)) for t in res["tags"]], dtype=np.int32)
        tag_idx.append(local[res["tag_index"]] if n else np.zeros(0, np.int32))
        path_idx.append(np.full(n, k, dtype=np.int32))
        steps.append(res["step"])
        values.append(res["value"])
        walls.append(res["wall_time"])

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

    return pa.table(
        {
            "path": pa.DictionaryArray.from_arrays(pa.array(cat(path_idx, np.int32)), pa.array(paths, pa.string())),
            "tag": pa.DictionaryArray.from_arrays(pa.array(cat(tag_idx, np.int32)), pa.array(list(tag_ids), pa.string())),
            "step": cat(steps, np.int64),
            "value": cat(values, np.float64),
            "wall_time": cat(walls, np.float64),
        }
    )


def _empty_table():
    return _to_table([])


def _atomic_write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def load_scalars(
    files: list[Path],
    cache_dir: Path | None,
    workers: int | None = None,
    log=None,
    pool=None,
    background_write: bool = False,
) -> tuple[pd.DataFrame, ReadReport]:
    """Tidy frame (path, tag, step, value, wall_time) of all scalars in `files`, via the cache.

    Only files whose path or `file_key` differ from the cache index are decoded. Files that
    vanished are dropped from the cache. Broken or cut-off files contribute what they hold and
    a warning; they never raise. `pool`: an existing process pool to decode in. With
    `background_write` the cache is written by a thread; join ``report.writer`` before exiting.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    log = log or (lambda msg: None)
    workers = workers or max(1, os.cpu_count() or 1)
    report = ReadReport(files=len(files))
    current: dict[str, tuple[int, int]] = {}
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        current[str(f)] = file_key(st)

    index: dict = {}
    data_path = index_path = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        data_path, index_path = cache_dir / "scalars.parquet", cache_dir / "index.json"
        if index_path.is_file() and data_path.is_file():
            try:
                raw = json.loads(index_path.read_text())
                if raw.get("version") == CACHE_VERSION:
                    index = raw["files"]
            except (ValueError, KeyError):
                log(f"warning: cache index {index_path} is unreadable; rebuilding it")
                index = {}

    unchanged = [p for p, key in current.items() if p in index and tuple(index[p]["key"]) == key]
    to_read = [p for p in current if p not in set(unchanged)]
    removed = [p for p in index if p not in current]
    report.cached, report.read = len(unchanged), len(to_read)

    cached_table = _empty_table()
    if unchanged:
        try:
            cached_table = pq.read_table(data_path)
        except Exception as err:  # a broken cache is rebuilt, never fatal
            log(f"warning: cache {data_path} is unreadable ({err}); re-reading every file")
            to_read, unchanged, index = list(current), [], {}
            report.cached, report.read = 0, len(to_read)
            cached_table = _empty_table()
        if to_read or removed:
            keep = pa.array(unchanged, pa.string())
            cached_table = cached_table.filter(pc.is_in(cached_table["path"].cast(pa.string()), value_set=keep))

    if to_read:
        log(f"reading {len(to_read)} event file(s) ({len(unchanged)} unchanged, from cache)")
        results = _read_many(to_read, workers, pool)
        good = []
        for path, res in results:
            if "error" in res:
                report.warnings.append(res["error"])
                continue
            good.append((path, res))
            index[path] = {"key": list(current[path]), "warning": res["warning"], "digest": res["digest"],
                           "points": int(len(res["step"]))}
        new_table = _to_table(good)
        table = pa.concat_tables([cached_table.unify_dictionaries() if cached_table.num_rows else cached_table,
                                  new_table], promote_options="permissive") if cached_table.num_rows else new_table
    else:
        table = cached_table
    for p in removed:
        index.pop(p, None)

    if cache_dir is not None and (to_read or removed):
        cache_dir.mkdir(parents=True, exist_ok=True)
        new_index = {"version": CACHE_VERSION, "files": {p: index[p] for p in current if p in index}}

        def write() -> None:
            # data first, index last: a crash in between leaves an index that still matches old data
            # or none at all, never an index that claims points the data file lacks
            tmp = data_path.with_suffix(".parquet.tmp")
            pq.write_table(table, tmp, compression="lz4")
            os.replace(tmp, data_path)
            _atomic_write_json(index_path, new_index)

        if background_write:  # pyarrow writes without the GIL: overlap it with the statistics
            import threading

            index_path.unlink(missing_ok=True)
            report.writer = threading.Thread(target=write, name="near-report-cache")
            report.writer.start()
        else:
            write()

    for p in current:
        if p in index:
            report.file_info[p] = {k: index[p].get(k) for k in ("points", "digest", "warning")}
            if index[p].get("warning"):
                report.warnings.append(index[p]["warning"])
    frame = table.to_pandas()
    for col in ("path", "tag"):
        if not isinstance(frame[col].dtype, pd.CategoricalDtype):
            frame[col] = frame[col].astype("category")
    report.points = len(frame)
    return frame, report


def path_metadata(paths: list[str], jobs: pd.DataFrame | None) -> pd.DataFrame:
    """One row per event file: path, run, and the job's columns (PURE: no I/O).

    Each event file belongs to the job whose ``run_dir`` is its closest ancestor directory; its
    ``run`` is that job's id. A file under no job gets the directory holding its ``summaries``
    folder as ``run`` and missing (None) job columns.
    """
    run_dirs: dict[str, int] = {}
    if jobs is not None and len(jobs) and "run_dir" in jobs.columns:
        for i, rd in enumerate(jobs["run_dir"].tolist()):
            if isinstance(rd, str) and rd:
                run_dirs[os.path.abspath(rd)] = i
    rows, runs = [], []
    for p in paths:
        parent = os.path.dirname(os.path.abspath(p))
        match = -1
        while True:  # walk up to the closest ancestor that is a job's run dir
            if parent in run_dirs:
                match = run_dirs[parent]
                break
            up = os.path.dirname(parent)
            if up == parent:
                break
            parent = up
        rows.append(match)
        if match >= 0 and "job_id" in jobs.columns:
            runs.append(str(jobs["job_id"].iloc[match]))
        elif match >= 0:
            runs.append(parent)
        else:
            parts = Path(p).parts
            cut = len(parts) - 1 - parts[::-1].index("summaries") if "summaries" in parts else len(parts) - 1
            runs.append(str(Path(*parts[:cut])))
    out = pd.DataFrame({"path": list(paths), "run": runs})
    if jobs is not None and len(jobs):
        src = jobs.reset_index(drop=True)
        for col in src.columns:
            if col in out.columns or col in BULKY_JOB_COLUMNS:
                continue
            vals = [src[col].iloc[j] if j >= 0 else None for j in rows]
            out[col] = pd.Series([None if (v is None or (isinstance(v, float) and np.isnan(v))) else v
                                  for v in vals], dtype=object)
    return out


def attach_metadata(scalars: pd.DataFrame, jobs: pd.DataFrame | None) -> pd.DataFrame:
    """Join job metadata onto scalar rows (PURE: no I/O): `path_metadata` repeated per row.

    Adds a ``run`` column and every job column (job_id, stage, state, algorithm, motion, seed, ...)
    as categoricals; rows of files under no job keep NaN metadata.
    """
    out = scalars.copy()
    paths = out["path"].astype("category")
    meta = path_metadata([str(p) for p in paths.cat.categories], jobs)
    codes = paths.cat.codes.to_numpy()
    for col in meta.columns:
        if col in out.columns:
            continue
        try:
            cat = pd.Categorical(meta[col])
        except TypeError:  # unorderable mixture of types
            cat = pd.Categorical([None if v is None else str(v) for v in meta[col]])
        out[col] = pd.Categorical.from_codes(cat.codes[codes], categories=cat.categories)
    return out


def attach_run(scalars: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """Add only the ``run`` column (categorical) from a `path_metadata` frame; cheap on big frames."""
    paths = scalars["path"].astype("category")
    run_of = dict(zip(meta["path"], meta["run"]))
    per_path = pd.Categorical([run_of[str(p)] for p in paths.cat.categories])
    codes = paths.cat.codes.to_numpy()
    out = scalars.assign(run=pd.Categorical.from_codes(per_path.codes[codes], categories=per_path.categories))
    return out


def dedupe_resumed(frame: pd.DataFrame, warn=None) -> pd.DataFrame:
    """A resumed run writes a new event file per attempt. Per tag, an attempt's first step is where it
    took up the run: what earlier attempts logged from that step on belongs to a course that was
    discarded (a crash after the last checkpoint) and is dropped; of the rest, the latest write per
    step is kept. Per tag, because tags count steps in their own units (iterations, frames, seconds).

    Attempts follow each other; event files of one run written at the same time are several runs
    taken for one (a run pattern that stops above the seeds): `warn` names each such run."""
    if frame.empty:
        return frame
    run_of = frame.drop_duplicates("path")[["path", "run"]].astype(str)
    counts = run_of["run"].value_counts()
    multi = counts[counts > 1].index
    if len(multi) == 0:
        return frame
    mask = frame["run"].isin(multi)
    part = frame[mask]
    keys = ["run", "tag", "path"]
    by_file = part.groupby(keys, observed=True, sort=False)
    file_of = by_file.ngroup().to_numpy()  # each row's attempt, numbered as `files` lists them
    files = by_file.agg(start=("wall_time", "min"), end=("wall_time", "max"), first=("step", "min")).reset_index()
    if warn is not None:
        _warn_side_by_side(files, warn)
    # per file, the smallest first step of any attempt that started later (latest first, running minimum,
    # shifted so that a file's own first step is not counted): earlier attempts' points from there on go
    files = files.sort_values(["run", "tag", "start"], ascending=[True, True, False], kind="stable")
    per_tag = ["run", "tag"]
    running = files.groupby(per_tag, observed=True, sort=False)["first"].cummin()
    files["cut"] = running.groupby([files["run"], files["tag"]], observed=True, sort=False).shift(1)
    cut = files.sort_index()["cut"].astype(float).fillna(np.inf).to_numpy()[file_of]
    part = part[part["step"].to_numpy() < cut]
    part = part.sort_values("wall_time", kind="stable")
    part = part.drop_duplicates(subset=["run", "tag", "step"], keep="last")
    return pd.concat([frame[~mask], part], ignore_index=True)


def _warn_side_by_side(files: pd.DataFrame, warn) -> None:
    """Warn for each run with event files whose writes of one tag overlap in time (per file: run, tag,
    path, start, end)."""
    files = files.sort_values(["run", "tag", "start"], kind="stable")
    per_tag = files.groupby(["run", "tag"], observed=True, sort=False)["end"]
    before = per_tag.cummax().groupby([files["run"], files["tag"]], observed=True, sort=False).shift(1)
    overlap = files["start"].to_numpy() < before.to_numpy(dtype=float, na_value=-np.inf)
    if not overlap.any():
        return
    clash = files.loc[overlap, ["run", "tag"]].astype(str).drop_duplicates()
    for run in dict.fromkeys(clash["run"]):
        tags = set(clash.loc[clash["run"] == run, "tag"])
        mine = files[(files["run"].astype(str) == run) & files["tag"].astype(str).isin(tags)]
        paths = sorted(set(mine["path"].astype(str)))
        shown = ", ".join(paths[:4]) + (f", ... ({len(paths)} in all)" if len(paths) > 4 else "")
        warn(f"run {run}: its event files were written at the same time, so they are not attempts of one "
             f"run (does the run pattern stop above the runs, e.g. the seeds?): {shown}; their points "
             "are merged as one run's")


def read_tbparse(folder: Path) -> pd.DataFrame:
    """Reference reader: plain tbparse over `folder` (columns dir_name, tag, step, value)."""
    from tbparse import SummaryReader

    return SummaryReader(str(folder), extra_columns={"dir_name"}).scalars


def warn(msg: str) -> None:
    """Print a warning on stderr."""
    print(f"near report: warning: {msg}", file=sys.stderr)
