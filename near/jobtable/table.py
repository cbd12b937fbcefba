"""The job table: the ONE place where a job's state changes (see the package docstring)."""

from __future__ import annotations

import errno
import gc
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from near.errors import TableError
from near.jobtable.records import (
    AddResult, Change, Event, JobBrief, JobRecord, JobSpec, _fast_resolve, _label, _params_encoder, run_dir_for,
    topo_order,
)
from near.jobtable.schema import JOB_COLUMNS, MAGIC, MIGRATIONS, REQUIRED_TABLES, SCHEMA, SCHEMA_VERSION, TABLE_FILENAME
from near.jobtable.states import (
    ACTIVE_STATES, BLOCKED, BLOCKING_STATES, CANCELLED, DONE, FAILED, FINAL_STATES, PENDING, PRUNED, QUEUED,
    RUNNING, STATES, check_states, check_transition,
)


def _now() -> float:
    return time.time()


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def disk_full(path: Path, err: BaseException | None = None) -> bool:
    """Whether ``err`` (or, without one, the file system of ``path``) says the disk is full."""
    if isinstance(err, sqlite3.DatabaseError) and getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        st = os.statvfs(path.parent if path.suffix else path)
    except OSError:
        return False
    # SQLite reports a failed journal/shm allocation as a generic I/O error: judge by the space left
    return st.f_bavail * st.f_frsize < 64 * 1024


def db_error(path: Path, err: BaseException, what: str) -> TableError:
    """The TableError for an SQLite/OS error on the table at ``path``: "disk full" when it is one."""
    if disk_full(path, err):
        return TableError(f"{path}: disk full ({what}: {err}); nothing recorded was lost: free space and run "
                          "the same command again")
    return TableError(f"{path}: {what} ({err})")


class JobTable:
    """Handle on one job table file. One instance per process/thread (sqlite connections are not shared)."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.exp_dir = str(path.parent.resolve())
        self._conn = conn

    # ------------------------------------------------------------------ opening
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so every transition takes the
        # write lock before reading the state it compares against.
        conn = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    @classmethod
    def create(cls, path: str | os.PathLike, *, sweep: str = "") -> "JobTable":
        """Create a new table at ``path`` (a file, or a directory that gets ``jobs.db``)."""
        path = cls._file(path)
        if path.exists():
            raise TableError(f"{path}: job table already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Build the schema in a private file, then link it into place: two processes creating the
        # same table at once can never half-initialise or delete each other's file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        try:
            conn = cls._connect(tmp)
            try:
                # 16 KiB pages (before the first write fixes the size): a 100k-job add splits and
                # logs a quarter as many pages as with the 4 KiB default (new tables only)
                conn.execute("PRAGMA page_size=16384")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN IMMEDIATE")
                for stmt in SCHEMA.strip().split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("magic", MAGIC), ("schema_version", str(SCHEMA_VERSION)), ("sweep", sweep),
                     ("axes", "[]"), ("created", repr(_now()))],
                )
                conn.execute("COMMIT")
            finally:
                conn.close()  # checkpoints the WAL into the file
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise TableError(f"{path}: job table already exists") from None
        finally:
            for f in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                f.unlink(missing_ok=True)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "JobTable":
        """Open an existing table; a missing, foreign or corrupt file raises TableError naming it."""
        path = cls._file(path)
        if not path.is_file():
            raise TableError(f"{path}: no job table here (run `near sweep add SPEC` first)")
        try:
            with open(path, "rb") as fh:
                header = fh.read(16)
        except OSError as err:
            raise TableError(f"{path}: cannot read job table: {err}") from err
        if header != b"SQLite format 3\x00":
            raise TableError(f"{path}: not a near job table (not an SQLite database)")
        try:
            conn = cls._connect(path)
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as err:
            if "conn" in locals():
                conn.close()
            raise db_error(path, err, "not a near job table or corrupt") from err
        if rows.get("magic") != MAGIC:
            conn.close()
            raise TableError(f"{path}: not a near job table (foreign SQLite database)")
        missing = [t for t in REQUIRED_TABLES if t not in tables]
        if missing:
            conn.close()
            raise TableError(f"{path}: not a near job table or corrupt: no {', '.join(missing)} table "
                             f"(meta says {MAGIC}, the rest is missing)")
        text = rows.get("schema_version", "")
        try:
            version = int(text)
        except ValueError:
            conn.close()
            raise TableError(f"{path}: corrupt job table: schema_version {text!r} is not a number") from None
        table = cls(path, conn)
        try:
            if version != SCHEMA_VERSION:
                table._migrate(version)
            table._tune()
        except BaseException:
            conn.close()
            raise
        return table

    def _migrate(self, version: int) -> None:
        """Bring an older table to this version in one transaction (a table from a newer near, or
        one we have no migration for, is refused)."""
        if version > SCHEMA_VERSION or version not in MIGRATIONS:
            raise TableError(f"{self.path}: job table schema {version}, this near reads {SCHEMA_VERSION}"
                             + (" (written by a newer near: upgrade near)" if version > SCHEMA_VERSION else ""))
        with self._tx() as c:
            while version < SCHEMA_VERSION:
                for stmt in MIGRATIONS[version]:
                    c.execute(stmt)
                version += 1
            c.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, *, sweep: str = "") -> "JobTable":
        """Open the table at ``path``, creating it if the file does not exist."""
        file = cls._file(path)
        if file.exists():
            return cls.open(file)
        try:
            return cls.create(file, sweep=sweep)
        except TableError:
            return cls.open(file)  # another process created it between our check and create

    @staticmethod
    def _file(path: str | os.PathLike) -> Path:
        p = Path(path)
        # a directory (existing or to be): the sweep folder; a file: anything existing or *.db
        if p.is_dir() or (not p.is_file() and p.suffix != ".db"):
            p = p / TABLE_FILENAME
        return p

    def _tune(self) -> None:
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL: commits survive a crash of any process; only an OS crash may lose the last ones.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=OFF")
            # random (hash) keys touch many index pages on big adds: keep them in memory
            self._conn.execute("PRAGMA cache_size=-65536")
            self._conn.execute("PRAGMA temp_store=MEMORY")
        except sqlite3.DatabaseError as err:
            raise db_error(self.path, err, "cannot use job table") from err

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> "JobTable":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transactions
    class _Tx:
        def __init__(self, conn: sqlite3.Connection, path: Path):
            self.conn, self.path = conn, path

        def __enter__(self) -> sqlite3.Connection:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as err:
                raise db_error(self.path, err, "cannot lock job table") from err
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            if exc_type is None:
                try:
                    self.conn.execute("COMMIT")
                    return
                except sqlite3.DatabaseError as err:
                    self._rollback()
                    raise db_error(self.path, err, "cannot write job table") from err
            self._rollback()
            if isinstance(exc, sqlite3.DatabaseError):
                raise db_error(self.path, exc, "cannot write job table") from exc

        def _rollback(self) -> None:
            if self.conn.in_transaction:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.DatabaseError:
                    pass

    def _tx(self) -> "JobTable._Tx":
        return JobTable._Tx(self._conn, self.path)

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, str]:
        """The meta key/value pairs (magic, schema_version, sweep, axes, spec files, ...)."""
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, key: str, value: str) -> None:
        """Store a meta value (e.g. the spec file a sweep came from)."""
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def axes(self) -> list[str]:
        """Axis names of this sweep in first-seen order (the per-axis columns of ``to_frame``)."""
        return json.loads(self.meta().get("axes", "[]"))

    @property
    def sweep(self) -> str:
        return self.meta().get("sweep", "")

    # ------------------------------------------------------------------ add
    def add(self, jobs: Iterable[JobSpec], *, axes: Sequence[str] | None = None) -> AddResult:
        """Insert jobs not yet present (by id). Dependencies must be in the batch or the table.

        A new job whose dependency is failed/cancelled/blocked starts blocked. All or nothing:
        on error the table is unchanged.
        """
        # Building 100k rows allocates hundreds of thousands of tuples and strings and frees none:
        # the cyclic GC would rescan the whole (expansion-sized) heap for nothing.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._add(jobs, axes)
        finally:
            if enabled:
                gc.enable()

    def _add(self, jobs: Iterable[JobSpec], axes: Sequence[str] | None) -> AddResult:
        jobs = jobs if isinstance(jobs, list) else list(jobs)
        merged: dict[str, JobSpec] = {j.job_id: j for j in jobs}
        if len(merged) != len(jobs):  # the same id twice: keep the first, count its uses
            merged = {}
            for job in jobs:
                prev = merged.get(job.job_id)
                if prev is None:
                    merged[job.job_id] = job
                else:
                    prev.uses += job.uses
        shared = sum(1 for j in merged.values() if j.uses > 1)
        axis_names = list(axes) if axes is not None else []
        if axes is None:
            seen: set[str] = set()
            for j in merged.values():
                for k in j.params:
                    if k not in seen:
                        seen.add(k)
                        axis_names.append(k)
        check_transition(None, PENDING)
        check_transition(None, BLOCKED)
        now = _now()
        with self._tx() as c:
            existing_ids = {r[0] for r in c.execute("SELECT job_id FROM jobs")}
            if existing_ids:
                new = [j for jid, j in merged.items() if jid not in existing_ids]
            else:
                new = list(merged.values())
            new_set = merged.keys() if len(new) == len(merged) else {j.job_id for j in new}
            # one pass: every dependency is known, and (usually) each comes before its dependents
            dep_states: dict[str, str] = {}
            deps_first = True
            placed: set[str] = set()
            for j in new:
                if j.deps:
                    for ref, dep in j.deps.items():
                        if dep in placed:
                            continue
                        if dep in new_set:
                            deps_first = False
                        elif dep in existing_ids:
                            dep_states[dep] = ""
                        else:
                            raise TableError(
                                f"{self.path}: job {j.job_id} ({j.stage}) needs {ref}={dep}, which is neither "
                                "in the table nor being added"
                            )
                placed.add(j.job_id)
            del placed
            if dep_states:
                for jid, st in self._states_of(c, list(dep_states)).items():
                    dep_states[jid] = st
            # Initial state: blocked if any dependency (existing, or new and itself blocked) cannot finish.
            order = new if deps_first else topo_order(new)
            blocked: dict[str, str] = {}  # job id -> reason; every other new job starts pending
            if any(st in BLOCKING_STATES for st in dep_states.values()):
                for j in order:
                    for ref, dep in j.deps.items():
                        st = dep_states.get(dep) if dep in dep_states else (BLOCKED if dep in blocked else PENDING)
                        if st in BLOCKING_STATES:
                            blocked[j.job_id] = f"dependency {ref}={dep} is {st}"
                            break
            res_json = {id(j.resources): j.resources for j in order}  # one dict per stage definition
            for k, r in res_json.items():
                res_json[k] = json.dumps(r, sort_keys=True)
            enc = _params_encoder()
            c.executemany(
                "INSERT INTO jobs(job_id, sweep, stage, command_template, params, resources, workdir, point, "
                "max_attempts, created, updated, state, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(j.job_id, j.sweep, j.stage, j.command, enc(j.params), res_json[id(j.resources)], j.workdir,
                  j.point, j.max_attempts, now, now, BLOCKED if j.job_id in blocked else PENDING,
                  blocked.get(j.job_id))
                 for j in order],
            )
            c.executemany(
                "INSERT INTO deps(job_id, ref, dep_job_id) VALUES (?,?,?)",
                [(j.job_id, ref, dep) for j in order if j.deps for ref, dep in j.deps.items()],
            )
            if blocked:
                c.executemany(
                    "INSERT INTO events(job_id, ts, from_state, to_state, reason, detail) VALUES (?,?,?,?,?,?)",
                    [(jid, now, None, BLOCKED, r, None) for jid, r in blocked.items()],
                )
            old_axes = json.loads(
                (c.execute("SELECT value FROM meta WHERE key='axes'").fetchone() or ["[]"])[0]
            )
            all_axes = old_axes + [a for a in axis_names if a not in old_axes]
            if all_axes != old_axes:
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('axes', ?)", (json.dumps(all_axes),))
            if not (c.execute("SELECT value FROM meta WHERE key='sweep'").fetchone() or [""])[0]:
                sweep_name = next((j.sweep for j in new if j.sweep), "")
                if sweep_name:
                    c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('sweep', ?)", (sweep_name,))
        return AddResult(
            new=len(new), existing=len(merged) - len(new), shared=shared,
            new_ids=tuple(j.job_id for j in order),
        )

    @staticmethod
    def _states_of(c: sqlite3.Connection, ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = f"SELECT job_id, state FROM jobs WHERE job_id IN ({','.join('?' * len(chunk))})"
            out.update(c.execute(q, chunk).fetchall())
        return out

    # ------------------------------------------------------------------ reading
    def _deps_map(self, ids: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        if ids is None:
            rows = self._conn.execute("SELECT job_id, ref, dep_job_id FROM deps").fetchall()
        else:
            rows = []
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                rows += self._conn.execute(
                    f"SELECT job_id, ref, dep_job_id FROM deps WHERE job_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
        for jid, ref, dep in rows:
            out.setdefault(jid, {})[ref] = dep
        return out

    def _records(self, rows: list[tuple], deps: dict[str, dict[str, str]] | None = None) -> list[JobRecord]:
        if deps is None:
            deps = self._deps_map([r[0] for r in rows]) if len(rows) < 2000 else self._deps_map()
        out = []
        loads = json.loads
        for r in rows:
            (job_id, sweep, stage, template, _cmd, params, resources, workdir, point, state, reason,
             exit_code, attempts, max_attempts, scheduler_id, lease_owner, lease_expires, created,
             updated, started, finished, crashes, requeues, charged, progress) = r
            try:
                params, resources = loads(params), loads(resources)
            except (ValueError, TypeError) as err:
                raise self._corrupt(job_id, "params" if not isinstance(params, dict) else "resources", err) from None
            out.append(JobRecord(
                job_id=job_id, sweep=sweep, stage=stage, command_template=template,
                params=params, resources=resources, workdir=workdir, point=point,
                state=state, reason=reason, exit_code=exit_code, attempts=attempts,
                max_attempts=max_attempts, scheduler_id=scheduler_id, lease_owner=lease_owner,
                lease_expires=lease_expires, created=created, updated=updated, started=started,
                finished=finished, run_dir=run_dir_for(self.exp_dir, job_id), exp_dir=self.exp_dir,
                deps=deps.get(job_id, {}), crashes=crashes, requeues=requeues, charged=charged, progress=progress,
            ))
        return out

    def check(self) -> None:
        """Raise TableError naming the first job whose params or resources are not valid JSON (one
        scan in SQLite; run before dispatching anything, so a corrupt row stops a run at once)."""
        row = self._conn.execute(
            "SELECT job_id, json_valid(params), params, resources FROM jobs "
            "WHERE NOT json_valid(params) OR NOT json_valid(resources) ORDER BY seq LIMIT 1").fetchone()
        if row is not None:
            column, text = ("params", row[2]) if not row[1] else ("resources", row[3])
            try:
                json.loads(text)
            except ValueError as err:
                raise self._corrupt(row[0], column, err) from None
            raise self._corrupt(row[0], column, ValueError("not JSON"))

    def _corrupt(self, job_id: str, column: str, err: Exception) -> TableError:
        return TableError(f"{self.path}: corrupt job table: job {job_id} has invalid {column} JSON ({err}); "
                          "restore the file from a backup or remove the sweep folder")

    def get(self, job_id: str) -> JobRecord:
        """The job with this exact id; TableError if absent."""
        rows = self._conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id=?", (job_id,)).fetchall()
        if not rows:
            raise TableError(f"{self.path}: no job {job_id}")
        return self._records(rows)[0]

    def find(self, prefix: str) -> JobRecord:
        """The job whose id starts with ``prefix`` (must be unique)."""
        ids = [r[0] for r in self._conn.execute(
            "SELECT job_id FROM jobs WHERE job_id >= ? AND job_id < ? LIMIT 3", (prefix, prefix + "\uffff")
        )]
        if not ids:
            raise TableError(f"{self.path}: no job matches {prefix!r}")
        if len(ids) > 1 and prefix not in ids:
            raise TableError(f"{self.path}: {prefix!r} is ambiguous ({', '.join(ids)}, ...)")
        return self.get(prefix if prefix in ids else ids[0])

    def jobs(self, states: Iterable[str] | None = None, stages: Iterable[str] | None = None) -> list[JobRecord]:
        """All jobs (optionally only those in ``states`` / ``stages``), in insertion order."""
        q, args = f"SELECT {JOB_COLUMNS} FROM jobs", []
        where = []
        if states is not None:
            states = list(states)
            check_states(states)
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        if stages is not None:
            stages = list(stages)
            where.append(f"stage IN ({','.join('?' * len(stages))})")
            args += stages
        if where:
            q += " WHERE " + " AND ".join(where)
        return self._records(self._conn.execute(q + " ORDER BY seq", args).fetchall())

    def briefs(self) -> list[JobBrief]:
        """Every job's id, state, scheduler id and dependencies, in insertion order: what a
        reconciliation needs of the whole table, without decoding full records."""
        deps = self._deps_map()
        return [JobBrief(j, s, sid, deps.get(j, {})) for j, s, sid in
                self._conn.execute("SELECT job_id, state, scheduler_id FROM jobs ORDER BY seq")]

    def counts(self) -> dict[str, int]:
        """Number of jobs per state (every state present as a key)."""
        out = {s: 0 for s in STATES}
        out.update(self._conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        return out

    def leased(self) -> list[tuple[str, str, float]]:
        """``(job_id, lease_owner, lease_expires)`` of active jobs held under a lease."""
        return self._conn.execute(
            "SELECT job_id, lease_owner, lease_expires FROM jobs WHERE state IN ('running','queued') "
            "AND lease_expires IS NOT NULL"
        ).fetchall()

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]

    def history(self, job_id: str) -> list[Event]:
        """The job's state changes, oldest first (the first entry is its creation)."""
        job = self.get(job_id)
        events = [Event(job_id, job.created, None, "created", None, None)]
        events += [Event(*r) for r in self._conn.execute(
            "SELECT job_id, ts, from_state, to_state, reason, detail FROM events WHERE job_id=? ORDER BY id",
            (job_id,),
        )]
        return events

    def histories(self, job_ids: Iterable[str]) -> dict[str, list[Event]]:
        """The recorded state changes (events) of many jobs, oldest first, in few queries (unlike
        :meth:`history`, without the synthetic creation entry). Jobs without events map to []."""
        ids = list(dict.fromkeys(job_ids))
        out: dict[str, list[Event]] = {j: [] for j in ids}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for r in self._conn.execute(
                "SELECT job_id, ts, from_state, to_state, reason, detail FROM events "
                f"WHERE job_id IN ({','.join('?' * len(chunk))}) ORDER BY id", chunk,
            ):
                out[r[0]].append(Event(*r))
        return out

    def deps(self, job_id: str) -> dict[str, str]:
        """Reference name -> job id this job depends on."""
        return self._deps_map([job_id]).get(job_id, {})

    def dependents(self, job_id: str) -> list[str]:
        """Ids of the jobs that depend directly on ``job_id``."""
        return [r[0] for r in self._conn.execute("SELECT job_id FROM deps WHERE dep_job_id=?", (job_id,))]

    # ------------------------------------------------------------------ transitions
    def _event(self, c: sqlite3.Connection, job_id: str, ts: float, frm: str | None, to: str,
               reason: str | None, detail: str | None = None) -> None:
        c.execute(
            "INSERT INTO events(job_id, ts, from_state, to_state, reason, detail) VALUES (?,?,?,?,?,?)",
            (job_id, ts, frm, to, reason, detail),
        )

    def claim(
        self,
        owner: str,
        limit: int = 1,
        lease_s: float | None = 60.0,
        *,
        to_state: str = RUNNING,
        stages: Iterable[str] | None = None,
        job_ids: Iterable[str] | None = None,
    ) -> list[JobRecord]:
        """Atomically take up to ``limit`` pending jobs whose dependencies are all done.

        They move to ``to_state`` (running, or queued for a scheduler) owned by ``owner`` with a lease
        of ``lease_s`` seconds (None: no lease, e.g. SLURM owns liveness), attempts+1. Never returns
        a job another claim returned, across processes. Oldest jobs first.
        """
        if to_state not in ACTIVE_STATES:
            raise TableError(f"claim: to_state must be one of {ACTIVE_STATES}, not {to_state!r}")
        check_transition(PENDING, to_state)
        now = _now()
        expires = None if lease_s is None else now + lease_s
        where, args = ["j.state='pending'"], []
        if stages is not None:
            stages = list(stages)
            where.append(f"j.stage IN ({','.join('?' * len(stages))})")
            args += stages
        if job_ids is not None:
            job_ids = list(job_ids)
            if not job_ids:
                return []
            where.append(f"j.job_id IN ({','.join('?' * len(job_ids))})")
            args += job_ids
        with self._tx() as c:
            rows = c.execute(
                f"UPDATE jobs SET state=?, lease_owner=?, lease_expires=?, attempts=attempts+1, updated=?, "
                f"reason=NULL, exit_code=NULL, started=CASE WHEN ?='running' THEN ? ELSE started END "
                f"WHERE job_id IN (SELECT j.job_id FROM jobs j WHERE {' AND '.join(where)} AND NOT EXISTS ("
                f"SELECT 1 FROM deps d JOIN jobs p ON p.job_id=d.dep_job_id "
                f"WHERE d.job_id=j.job_id AND p.state!='done') ORDER BY j.seq LIMIT ?) "
                f"RETURNING {JOB_COLUMNS}",
                [to_state, owner, expires, now, to_state, now] + args + [int(limit)],
            ).fetchall()
            for r in rows:
                self._event(c, r[0], now, PENDING, to_state, None, f"owner={owner}")
        try:
            return self._records(rows)  # decoded after the commit: the write lock is held no longer
        except TableError:
            # a corrupt row: put the claimed jobs back rather than leave them running under a
            # controller that cannot start them
            with self._tx() as c:
                for r in rows:
                    self._apply(c, r[0], to_state, PENDING, _now(), reason="claim undone: corrupt row", charge=-1)
            raise

    def heartbeat(self, owner: str, job_ids: Iterable[str], lease_s: float = 60.0) -> set[str]:
        """Extend the leases ``owner`` holds on ``job_ids``; returns the ids it still owns."""
        ids = list(job_ids)
        if not ids:
            return set()
        now = _now()
        with self._tx() as c:
            rows = c.execute(
                f"UPDATE jobs SET lease_expires=?, updated=? WHERE lease_owner=? AND state IN ('running','queued') "
                f"AND job_id IN ({','.join('?' * len(ids))}) RETURNING job_id",
                [now + lease_s, now, owner] + ids,
            ).fetchall()
        return {r[0] for r in rows}

    def transition(
        self,
        job_id: str,
        to_state: str,
        *,
        reason: str | None = None,
        exit_code: int | None = None,
        scheduler_id: str | None = None,
        expect: Iterable[str] | None = None,
        owner: str | None = None,
        detail: str | None = None,
        charge: int = 0,
        new_owner: str | None = None,
        lease_s: float | None = None,
    ) -> bool:
        """Compare-and-set one job's state. Returns False (and changes nothing) if the job is not in
        one of ``expect`` (default: any state) or, with ``owner``, not leased by ``owner``.

        Side effects, in the same transaction: timestamps (started on running, finished on
        done/failed/cancelled), the lease is dropped when leaving running/queued, attempts += ``charge``
        (+1 automatically when going from pending to running/queued), dependents of a job going to
        failed/cancelled become blocked (transitively), an event row is written. Going to an active
        state, ``new_owner``/``lease_s`` set the lease holder and its expiry. A move the transition
        table does not allow raises TableError.
        """
        check_states([to_state])
        expect = list(expect) if expect is not None else None
        if expect is not None:
            check_states(expect)
        with self._tx() as c:
            return self._cas(c, job_id, to_state, _now(), expect=expect, owner=owner, reason=reason,
                             exit_code=exit_code, scheduler_id=scheduler_id, detail=detail, charge=charge,
                             new_owner=new_owner, lease_s=lease_s)

    def transition_many(self, changes: Iterable[Change], *, batch: int = 2000) -> list[bool]:
        """:meth:`transition` for many jobs, ``batch`` changes per ``BEGIN IMMEDIATE`` transaction
        (one commit instead of one per job). Each change is still its own compare-and-set on its
        ``expect`` states, applied in order with the same side effects (events, blocked
        dependents). Returns, per change, whether it applied. An unknown job raises TableError and
        rolls back the changes of its batch (earlier batches stay committed)."""
        changes = list(changes)
        for ch in changes:
            check_states(([ch.to_state] if ch.to_state is not None else []) + list(ch.expect or ()))
        out: list[bool] = []
        batch = max(1, batch)
        for i in range(0, len(changes), batch):
            part = changes[i : i + batch]
            with self._tx() as c:
                now = _now()
                # jobs that have dependents at all (deps do not change here): the others skip the
                # query that blocks dependents
                ids = list({ch.job_id for ch in part if ch.to_state in BLOCKING_STATES})
                parents: set[str] = set()
                for k in range(0, len(ids), 500):
                    chunk = ids[k : k + 500]
                    parents.update(r[0] for r in c.execute(
                        f"SELECT DISTINCT dep_job_id FROM deps WHERE dep_job_id IN ({','.join('?' * len(chunk))})",
                        chunk))
                out += [
                    self._cas(c, ch.job_id, ch.to_state, now, expect=ch.expect, owner=ch.owner, reason=ch.reason,
                              exit_code=ch.exit_code, scheduler_id=ch.scheduler_id, detail=ch.detail,
                              charge=ch.charge, has_dependents=ch.job_id in parents, crashes=ch.crashes,
                              requeues=ch.requeues, charged=ch.charged, progress=ch.progress, outcome=ch.outcome)
                    for ch in part
                ]
        return out

    def _cas(self, c: sqlite3.Connection, job_id: str, to_state: str | None, now: float, *,
             expect: Sequence[str] | None, owner: str | None, outcome: str | None = None, **apply: Any) -> bool:
        """Inside a write transaction: apply the change if the job is in ``expect`` (and leased by
        ``owner``) and its ``outcome`` was not folded before; False otherwise."""
        row = c.execute("SELECT state, lease_owner FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            raise TableError(f"{self.path}: no job {job_id}")
        frm, lease_owner = row
        if expect is not None and frm not in expect:
            return False
        if owner is not None and lease_owner != owner:
            return False
        if outcome is not None:
            if c.execute("SELECT 1 FROM outcomes WHERE job_id=? AND name=?", (job_id, outcome)).fetchone():
                return False
            c.execute("INSERT INTO outcomes(job_id, name) VALUES (?, ?)", (job_id, outcome))
        if to_state is None:
            self._count(c, job_id, now, **apply)
        else:
            self._apply(c, job_id, frm, to_state, now, **apply)
        return True

    @staticmethod
    def _count(c: sqlite3.Connection, job_id: str, now: float, *, scheduler_id: str | None = None,
               charge: int = 0, crashes: int = 0, requeues: int = 0, charged: int = 0,
               progress: str | None = None, **_ignored: Any) -> None:
        """The bookkeeping of a change that keeps the state (no event: nothing moved)."""
        c.execute(
            "UPDATE jobs SET scheduler_id=COALESCE(?, scheduler_id), attempts=MAX(0, attempts+?), "
            "crashes=crashes+?, requeues=requeues+?, charged=charged+?, progress=COALESCE(?, progress), "
            "updated=? WHERE job_id=?",
            (scheduler_id, charge, crashes, requeues, charged, progress, now, job_id),
        )

    def _apply(self, c: sqlite3.Connection, job_id: str, frm: str, to: str, now: float, *,
               reason: str | None, exit_code: int | None = None, scheduler_id: str | None = None,
               detail: str | None = None, charge: int = 0, new_owner: str | None = None,
               lease_s: float | None = None, has_dependents: bool = True, crashes: int = 0,
               requeues: int = 0, charged: int = 0, progress: str | None = None) -> None:
        check_transition(frm, to, reason, job_id)
        sets = ["state=?", "reason=?", "updated=?"]
        args: list[Any] = [to, reason, now]
        if exit_code is not None or to in (PENDING, QUEUED, RUNNING):
            sets.append("exit_code=?")
            args.append(exit_code)
        if scheduler_id is not None:
            sets.append("scheduler_id=?")
            args.append(scheduler_id)
        if to == RUNNING and frm != RUNNING:
            sets.append("started=?")
            args.append(now)
        if to in FINAL_STATES:
            sets.append("finished=?")
            args.append(now)
        elif to in (PENDING, QUEUED, RUNNING):
            sets.append("finished=NULL")
        if frm == PENDING and to in ACTIVE_STATES:
            charge += 1
        if charge:
            sets.append("attempts=MAX(0, attempts+?)")
            args.append(charge)
        for col, n in (("crashes", crashes), ("requeues", requeues), ("charged", charged)):
            if n:
                sets.append(f"{col}={col}+?")
                args.append(n)
        if progress is not None:
            sets.append("progress=?")
            args.append(progress)
        if to in ACTIVE_STATES:
            if new_owner is not None:
                sets.append("lease_owner=?")
                args.append(new_owner)
            if lease_s is not None:
                sets.append("lease_expires=?")
                args.append(now + lease_s)
        else:
            sets.append("lease_owner=NULL, lease_expires=NULL")
        c.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE job_id=?", args + [job_id])
        ev_detail = detail
        if exit_code is not None:
            ev_detail = f"exit_code={exit_code}" + (f"; {detail}" if detail else "")
        self._event(c, job_id, now, frm, to, reason, ev_detail)
        if to in BLOCKING_STATES and frm not in BLOCKING_STATES and has_dependents:
            self._block_dependents(c, job_id, now, f"dependency {job_id} {to}")

    def _block_dependents(self, c: sqlite3.Connection, job_id: str, now: float, reason: str) -> None:
        check_transition(PENDING, BLOCKED)
        frontier = [job_id]
        while frontier:
            nxt = []
            for jid in frontier:
                rows = c.execute(
                    "UPDATE jobs SET state='blocked', reason=?, updated=? WHERE state='pending' AND job_id IN "
                    "(SELECT job_id FROM deps WHERE dep_job_id=?) RETURNING job_id",
                    (reason, now, jid),
                ).fetchall()
                for (dep,) in rows:
                    self._event(c, dep, now, PENDING, BLOCKED, reason)
                    nxt.append(dep)
            frontier = nxt

    # conveniences -------------------------------------------------------
    def mark_queued(self, job_id: str, scheduler_id: str | None = None, *, owner: str | None = None,
                    expect: Iterable[str] = (PENDING,)) -> bool:
        """pending -> queued (submitted to a scheduler), recording its scheduler id."""
        return self.transition(job_id, QUEUED, scheduler_id=scheduler_id, expect=expect, owner=owner)

    def mark_running(self, job_id: str, *, owner: str | None = None, scheduler_id: str | None = None,
                     lease_s: float | None = None, expect: Iterable[str] = (PENDING, QUEUED, RUNNING)) -> bool:
        """-> running (e.g. a SLURM job started); with ``owner``/``lease_s`` it takes the lease."""
        return self.transition(job_id, RUNNING, scheduler_id=scheduler_id, expect=expect,
                               new_owner=owner, lease_s=lease_s, detail=f"owner={owner}" if owner else None)

    def mark_done(self, job_id: str, *, owner: str | None = None, exit_code: int | None = 0,
                  expect: Iterable[str] = ACTIVE_STATES) -> bool:
        """running/queued -> done."""
        return self.transition(job_id, DONE, exit_code=exit_code, expect=expect, owner=owner)

    def mark_failed(self, job_id: str, reason: str, *, exit_code: int | None = None, owner: str | None = None,
                    expect: Iterable[str] = ACTIVE_STATES + (PENDING,)) -> bool:
        """-> failed with a reason (e.g. ``exit code 1``, ``timeout``); dependents become blocked."""
        return self.transition(job_id, FAILED, reason=reason, exit_code=exit_code, expect=expect, owner=owner)

    def mark_cancelled(self, job_id: str, reason: str = "cancelled", *,
                       expect: Iterable[str] = (PENDING, QUEUED, RUNNING, BLOCKED)) -> bool:
        """-> cancelled; dependents become blocked."""
        return self.transition(job_id, CANCELLED, reason=reason, expect=expect)

    def release(self, job_id: str, reason: str = "interrupted", *, owner: str | None = None,
                refund: bool = True, exit_code: int | None = None) -> bool:
        """Put an active job back to pending after an interruption the executor caused (Ctrl-C,
        SIGTERM, preemption): no attempt charged when ``refund``."""
        return self.transition(job_id, PENDING, reason=reason, owner=owner, expect=ACTIVE_STATES,
                               charge=-1 if refund else 0, exit_code=exit_code)

    def prune(self, job_ids: Iterable[str], reason: str) -> int:
        """Active jobs -> pruned (a search stopped them early; ``reason`` says at which step and value).
        Returns how many changed; jobs no longer active are left alone."""
        changes = [Change(j, PRUNED, expect=ACTIVE_STATES, reason=reason) for j in job_ids]
        return sum(self.transition_many(changes))

    def folded(self, job_ids: Iterable[str] | None = None) -> dict[str, set[str]]:
        """Job id -> names of the node outcomes already recorded (folding one again changes nothing)."""
        out: dict[str, set[str]] = {}
        if job_ids is None:
            rows = self._conn.execute("SELECT job_id, name FROM outcomes").fetchall()
        else:
            ids, rows = list(job_ids), []
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                rows += self._conn.execute(
                    f"SELECT job_id, name FROM outcomes WHERE job_id IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
        for jid, name in rows:
            out.setdefault(jid, set()).add(name)
        return out

    def set_scheduler_id(self, job_id: str, scheduler_id: str) -> None:
        """Record the executor's id for a job without changing its state."""
        with self._tx() as c:
            c.execute("UPDATE jobs SET scheduler_id=?, updated=? WHERE job_id=?", (scheduler_id, _now(), job_id))

    def set_max_attempts(self, max_attempts: int, states: Iterable[str] = (PENDING, QUEUED, RUNNING, BLOCKED)) -> int:
        """Change ``max_attempts`` of the jobs in ``states``; returns how many changed."""
        states = list(states)
        check_states(states)
        with self._tx() as c:
            cur = c.execute(
                f"UPDATE jobs SET max_attempts=? WHERE state IN ({','.join('?' * len(states))})",
                [int(max_attempts)] + states,
            )
            return cur.rowcount

    def set_command(self, job_id: str, command: str, *, scheduler_id: str | None = None) -> None:
        """Record the exact command dispatched (shown by ``show``), and the executor's id of the attempt."""
        with self._tx() as c:
            c.execute("UPDATE jobs SET command=?, scheduler_id=COALESCE(?, scheduler_id) WHERE job_id=?",
                      (command, scheduler_id, job_id))

    def expired(self, now: float | None = None, *, exclude_owner: str | None = None) -> list[JobRecord]:
        """Active jobs whose lease expired (their worker or controller died), except ``exclude_owner``'s
        (a live caller knows its own jobs run, even if it was too slow to renew their leases)."""
        now = _now() if now is None else now
        rows = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('running','queued') AND lease_expires IS NOT NULL "
            "AND lease_expires < ? AND lease_owner IS NOT ?", (now, exclude_owner),
        ).fetchall()
        return self._records(rows)

    def requeue_stale(self, now: float | None = None, *, exclude_owner: str | None = None,
                      decide: Callable[[JobRecord], Change] | None = None) -> list[tuple[str, str]]:
        """Jobs whose lease expired: each gets the change ``decide(job)`` returns (the executors'
        retry policy; by default back to pending, or failed once ``attempts >= max_attempts``),
        applied only if its lease is still the expired one. Returns ``[(job_id, new_state), ...]``."""
        now = _now() if now is None else now
        stale = self.expired(now, exclude_owner=exclude_owner)
        if not stale:
            return []

        def default(job: JobRecord) -> Change:
            why = f"lease expired (worker {job.lease_owner} lost)"
            if job.attempts >= job.max_attempts:
                return Change(job.job_id, FAILED, reason=f"{why} after {job.attempts} attempts")
            return Change(job.job_id, PENDING, reason=f"{why}; attempt {job.attempts}/{job.max_attempts}")

        out = []
        with self._tx() as c:
            for job in stale:
                ch = (decide or default)(job)
                row = c.execute("SELECT state, lease_owner, lease_expires FROM jobs WHERE job_id=?",
                                (job.job_id,)).fetchone()
                if row != (job.state, job.lease_owner, job.lease_expires):
                    continue  # renewed or moved since it was read
                self._apply(c, job.job_id, job.state, ch.to_state, _now(), reason=ch.reason, exit_code=ch.exit_code,
                            crashes=ch.crashes, charged=ch.charged, requeues=ch.requeues, detail=ch.detail)
                out.append((job.job_id, ch.to_state))
        return out

    def reset(self, states: Iterable[str], *, job_ids: Iterable[str] | None = None, force: bool = False) -> int:
        """Put jobs in ``states`` back to pending with attempts=0; blocked jobs whose dependencies no
        longer fail become pending again. Active states need ``force`` (they may still be running).
        Returns the number of jobs changed (reset + unblocked)."""
        states = list(states)
        check_states(states)
        if not force and any(s in ACTIVE_STATES for s in states):
            raise TableError("reset of queued/running jobs could run them twice; stop them first (or force)")
        now = _now()
        changed = 0
        with self._tx() as c:
            q = f"SELECT job_id, state FROM jobs WHERE state IN ({','.join('?' * len(states))})"
            args: list[Any] = list(states)
            if job_ids is not None:
                ids = list(job_ids)
                q += f" AND job_id IN ({','.join('?' * len(ids))})"
                args += ids
            for job_id, frm in c.execute(q, args).fetchall():
                if frm in (BLOCKED, PENDING):
                    continue  # blocked: unblocked below only if their dependencies allow it
                check_transition(frm, PENDING, "reset", job_id)
                c.execute(
                    "UPDATE jobs SET state='pending', reason=NULL, exit_code=NULL, attempts=0, crashes=0, "
                    "requeues=0, charged=0, lease_owner=NULL, lease_expires=NULL, finished=NULL, updated=? "
                    "WHERE job_id=?",
                    (now, job_id),
                )
                self._event(c, job_id, now, frm, PENDING, "reset")
                changed += 1
            changed += self._unblock(c, now)
        return changed

    def _unblock(self, c: sqlite3.Connection, now: float) -> int:
        check_transition(BLOCKED, PENDING)
        changed = 0
        blocking = ",".join(f"'{s}'" for s in BLOCKING_STATES)
        while True:
            rows = c.execute(
                "SELECT j.job_id FROM jobs j WHERE j.state='blocked' AND NOT EXISTS (SELECT 1 FROM deps d "
                "JOIN jobs p ON p.job_id=d.dep_job_id WHERE d.job_id=j.job_id "
                f"AND p.state IN ({blocking}))"
            ).fetchall()
            if not rows:
                return changed
            for (job_id,) in rows:
                c.execute("UPDATE jobs SET state='pending', reason=NULL, updated=? WHERE job_id=?", (now, job_id))
                self._event(c, job_id, now, BLOCKED, PENDING, "unblocked: dependencies no longer failed")
                changed += 1

    def cancel(self, job_ids: Iterable[str], reason: str = "cancelled by user") -> int:
        """Cancel the given jobs that are not yet final; dependents become blocked."""
        n = 0
        for jid in job_ids:
            n += self.mark_cancelled(jid, reason)
        return n

    # ------------------------------------------------------------------ views
    def to_frame(self):
        """pandas DataFrame, one row per job: job_id, sweep, stage, state, reason, exit_code, attempts,
        max_attempts, run_dir (absolute), command (resolved), command_template, scheduler_id, point,
        created/updated/started/finished (UTC timestamps), deps (JSON ref -> job id), resources (JSON),
        plus one column per sweep axis (missing where a job does not use the axis) and any other
        parameter a job carries (e.g. keys passed through ``needs.with``)."""
        import pandas as pd

        axes = self.axes()
        cols = ["job_id", "sweep", "stage", "state", "reason", "exit_code", "attempts", "max_attempts",
                "scheduler_id", "created", "updated", "started", "finished", "command_template", "params",
                "resources", "point"]
        rows = self._conn.execute(f"SELECT {', '.join(cols)} FROM jobs ORDER BY seq").fetchall()
        deps = self._deps_map()
        df = pd.DataFrame.from_records(rows, columns=cols)
        ids = df["job_id"].tolist()
        runs = os.path.join(self.exp_dir, "runs") + os.sep
        loads = json.loads
        try:
            params = [loads(p) for p in df["params"].tolist()]
        except ValueError as err:
            bad = next(j for j, p in zip(ids, df["params"].tolist()) if not _is_json(p))
            raise self._corrupt(bad, "params", err) from None
        dep_list = [deps.get(j, {}) for j in ids]
        df["run_dir"] = [runs + j for j in ids]
        df["command"] = [_fast_resolve(t, j, self.exp_dir, d)
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

    def export(self, path: str | os.PathLike, fmt: str | None = None) -> Path:
        """Write ``to_frame()`` to CSV or parquet (``fmt`` from the suffix if omitted)."""
        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".")).lower()
        df = self.to_frame()
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
