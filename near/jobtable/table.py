"""The job table handle: opening (read-write or read-only), migration, meta, and the methods the
rest of near calls, each defined in the module named after what it does (see the package
docstring): :mod:`~near.jobtable.adding`, :mod:`~near.jobtable.transitions`,
:mod:`~near.jobtable.counters`, :mod:`~near.jobtable.queries`, :mod:`~near.jobtable.frames`."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from near.errors import TableError
from near.jobtable import adding, counters, frames, queries, transitions
from near.jobtable.connection import WriteTx, connect, connect_readonly, db_error, reads
from near.jobtable.connection import now as _now
from near.jobtable.schema import (
    CREATE, MAGIC, MIGRATIONS, OLDEST_READABLE, REQUIRED_TABLES, SCHEMA_VERSION, TABLE_FILENAME,
)


class JobTable:
    """Handle on one job table file. One instance per process/thread (sqlite connections are not shared).

    ``readonly``: opened by a command that only looks (``status``, ``show``, ``export``, a report):
    it never migrates or writes, and works on a read-only file and folder."""

    def __init__(self, path: Path, conn: sqlite3.Connection, *, readonly: bool = False):
        self.path = path
        self.exp_dir = str(path.parent.resolve())
        self.readonly = readonly
        self._conn = conn

    # ------------------------------------------------------------------ opening
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
            conn = connect(tmp)
            try:
                # 16 KiB pages (before the first write fixes the size): a 100k-job add splits and
                # logs a quarter as many pages as with the 4 KiB default (new tables only)
                conn.execute("PRAGMA page_size=16384")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN IMMEDIATE")
                for stmt in CREATE:
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
    def open(cls, path: str | os.PathLike, *, readonly: bool = False) -> "JobTable":
        """Open an existing table; a missing, foreign or corrupt file raises TableError naming it.

        ``readonly`` (also taken when the file or its folder is not writable): open it without any
        write (SQLite ``mode=ro``): an older table is read as it is, never migrated, and any write
        raises TableError."""
        path = cls._file(path)
        if not path.is_file():
            raise TableError(f"{path}: no job table here (run `near sweep add SPEC` first)")
        if not readonly and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            readonly = True
        try:
            with open(path, "rb") as fh:
                header = fh.read(16)
        except OSError as err:
            raise TableError(f"{path}: cannot read job table: {err}") from err
        if header != b"SQLite format 3\x00":
            raise TableError(f"{path}: not a near job table (not an SQLite database)")
        conn = None
        try:
            conn = connect_readonly(path) if readonly else connect(path)
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as err:
            if conn is not None:
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
        table = cls(path, conn, readonly=readonly)
        try:
            if version != SCHEMA_VERSION and not (readonly and OLDEST_READABLE <= version < SCHEMA_VERSION):
                table._migrate(version)
            if not readonly:
                table._tune()
                if not counters.tallies_agree(table):  # just migrated, or jobs edited by something other than near
                    counters.recount(table)
        except BaseException:
            conn.close()
            raise
        return table

    def _migrate(self, version: int) -> None:
        """Bring an older table to this version in one transaction (a table from a newer near, or
        one we have no migration for, is refused; so is any migration of a read-only handle)."""
        if version > SCHEMA_VERSION or version not in MIGRATIONS:
            raise TableError(f"{self.path}: job table schema {version}, this near reads {SCHEMA_VERSION}"
                             + (" (written by a newer near: upgrade near)" if version > SCHEMA_VERSION else ""))
        if self.readonly:
            raise TableError(f"{self.path}: job table schema {version} is too old to read without upgrading it; "
                             "a command that writes it (e.g. `near sweep run`, where the file is writable) upgrades it")
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

    def _tx(self) -> WriteTx:
        if self.readonly:
            raise TableError(f"{self.path}: opened read-only (by a command that only reads, or because the file "
                             "or its folder is not writable); nothing was written")
        return WriteTx(self._conn, self.path)

    # ------------------------------------------------------------------ meta
    @reads
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

    # ------------------------------------------------------------------ writes (the one write path)
    add = adding.add
    claim = transitions.claim
    heartbeat = transitions.heartbeat
    transition = transitions.transition
    transition_many = transitions.transition_many
    mark_queued = transitions.mark_queued
    mark_running = transitions.mark_running
    mark_done = transitions.mark_done
    mark_failed = transitions.mark_failed
    mark_cancelled = transitions.mark_cancelled
    release = transitions.release
    prune = transitions.prune
    cancel = transitions.cancel
    requeue_stale = transitions.requeue_stale
    reset = transitions.reset
    set_scheduler_id = transitions.set_scheduler_id
    set_max_attempts = transitions.set_max_attempts
    set_command = transitions.set_command

    # ------------------------------------------------------------------ reads
    counts = counters.counts
    by_axis = counters.by_axis
    attention = queries.attention
    check = queries.check
    get = queries.get
    find = queries.find
    jobs = queries.jobs
    briefs = queries.briefs
    leased = queries.leased
    expired = queries.expired
    history = queries.history
    histories = queries.histories
    claims_since_reset = queries.claims_since_reset
    deps = queries.deps
    dependents = queries.dependents
    folded = queries.folded
    __len__ = queries.size

    # ------------------------------------------------------------------ pandas views
    to_frame = frames.to_frame
    export = frames.export
