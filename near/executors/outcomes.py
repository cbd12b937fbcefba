"""Outcome files: how a job's attempts report what happened, without touching the job table.

A node (or the local supervisor) writes one small JSON file per event under
``<run_dir>/outcomes/``: written to a temporary name, fsynced, renamed, the directory fsynced, so a
reader on another host (NFS, Lustre) sees a whole file or none. File names sort by time and are
unique, and they are the identity the controller records when it folds an outcome into the table
(an outcome folded once is never folded again).

This module is imported on SLURM nodes: it must not import the job table.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

OUTCOMES_DIR = "outcomes"
RESERVE_SIZE = 4096

# kinds of outcome
STARTED = "started"        # an attempt began (scheduler id, host)
FINISHED = "finished"      # the command exited with exit_code (0 done, 2 config error, 3 resumable, else crash)
REQUEUED = "requeued"      # interrupted resumably and held by the scheduler to run again (time limit, requeue)
GAVE_UP = "gave_up"        # the node stopped retrying (too many requeues): fail without retry
LOST = "lost"              # the attempt ended without an exit status of its own (node died, killed, timed out)
CANCELLED = "cancelled"    # the scheduler cancelled it
STOPPED = "stopped"        # the controller stopped it (Ctrl-C): back to pending, attempt refunded
KINDS = (STARTED, FINISHED, REQUEUED, GAVE_UP, LOST, CANCELLED, STOPPED)


@dataclass(frozen=True)
class Outcome:
    """One event of one attempt of a job. ``name`` is the outcome file's name (None for outcomes a
    controller concluded itself, e.g. from sacct). ``progress`` is the checkpoint progress seen when
    the outcome was written (see :func:`checkpoint_progress`)."""

    job_id: str
    kind: str
    exit_code: int | None = None
    scheduler_id: str | None = None
    reason: str | None = None
    progress: str | None = None
    host: str | None = None
    ts: float = 0.0
    name: str | None = None

    def but(self, **changes) -> "Outcome":
        """A copy with some fields changed (e.g. a controller's reading of a supervisor's outcome)."""
        return replace(self, **changes)


def outcomes_dir(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/outcomes``."""
    return Path(run_dir) / OUTCOMES_DIR


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(outcome: Outcome) -> bytes:
    data = {k: v for k, v in asdict(outcome).items() if k != "name" and v is not None}
    return json.dumps(data, sort_keys=True).encode()


def reserve(run_dir: str | os.PathLike) -> Path:
    """Allocate the space of one outcome file now (a temporary file of spaces, fsynced), so that the
    outcome of this attempt can be written even if the disk fills up meanwhile."""
    folder = outcomes_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".reserve-{os.getpid()}-{time.time_ns()}"
    with open(path, "wb") as fh:
        fh.write(b" " * RESERVE_SIZE)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def write_outcome(run_dir: str | os.PathLike, outcome: Outcome, reserved: Path | None = None) -> Path:
    """Write ``outcome`` as ``<run_dir>/outcomes/<ns>-<kind>-<pid>.json`` (temp, fsync, rename, fsync
    dir). With ``reserved`` (from :func:`reserve`), the bytes go into that pre-allocated file."""
    folder = outcomes_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamped = outcome.but(ts=outcome.ts or time.time(), host=outcome.host or socket.gethostname())
    body = _encode(stamped)
    final = folder / f"{time.time_ns():020d}-{outcome.kind}-{os.getpid()}.json"
    if reserved is not None and len(body) <= RESERVE_SIZE:
        tmp = reserved
        with open(tmp, "r+b") as fh:  # overwrite in place: no new blocks needed
            fh.write(body + b" " * (RESERVE_SIZE - len(body)))
            fh.flush()
            os.fsync(fh.fileno())
    else:
        tmp = folder / f".tmp-{os.getpid()}-{time.time_ns()}"
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(folder)
    return final


def read_outcomes(run_dir: str | os.PathLike, job_id: str, skip: set[str] | frozenset[str] = frozenset()) -> list[Outcome]:
    """The outcomes of ``job_id`` in its run dir, oldest first, except those named in ``skip``.
    A file that is not valid JSON (never the case for a renamed file) is skipped."""
    folder = os.path.join(os.fspath(run_dir), OUTCOMES_DIR)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and n not in skip)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        try:
            with open(os.path.join(folder, name), "rb") as fh:
                data = json.loads(fh.read())
            out.append(Outcome(job_id=job_id, kind=data["kind"], exit_code=data.get("exit_code"),
                               scheduler_id=data.get("scheduler_id"), reason=data.get("reason"),
                               progress=data.get("progress"), host=data.get("host"), ts=data.get("ts", 0.0),
                               name=name))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


HASH_LIMIT = 64 * 2 ** 20


def checkpoint_progress(run_dir: str | os.PathLike, pattern: str | None) -> str | None:
    """A token that changes whenever the job's declared checkpoint changes: the newest file of the
    run dir matching ``pattern`` (a path or glob relative to it, e.g. ``nn/checkpoint.pth``), by
    its relative path and content digest (size and mtime past 64 MiB). A job that rewrites the same
    checkpoint makes no progress; a job that declares none (``pattern`` None) never does."""
    if not pattern:
        return None
    root = Path(run_dir)
    best: tuple[int, int, str] | None = None
    for path in root.glob(pattern):
        try:
            st = path.stat()
        except OSError:
            continue
        if not path.is_file() or path.name.endswith(".tmp") or OUTCOMES_DIR in path.relative_to(root).parts:
            continue
        cand = (st.st_mtime_ns, st.st_size, path.relative_to(root).as_posix())
        if best is None or cand > best:
            best = cand
    if best is None:
        return None
    mtime_ns, size, rel = best
    if size <= HASH_LIMIT:
        try:
            return f"{rel}:sha1:{hashlib.sha1((root / rel).read_bytes()).hexdigest()}"
        except OSError:
            pass
    return f"{rel}:{size}:{mtime_ns}"
