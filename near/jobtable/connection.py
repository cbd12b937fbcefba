"""The SQLite side of the job table: connections (read-write, or read-only for commands that only
look), write transactions, and the errors that name the file."""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import quote

from near.errors import TableError

F = TypeVar("F", bound=Callable[..., Any])


def now() -> float:
    """The wall-clock time stamps in the table are written with."""
    return time.time()


def connect(path: Path) -> sqlite3.Connection:
    """A read-write connection that waits up to a minute for another writer's lock."""
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so every transition takes the
    # write lock before reading the state it compares against.
    conn = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot write: the file and its folder may be read-only.

    A WAL database needs its ``-shm`` file to be read; in a folder where SQLite cannot create it,
    and no ``-wal`` file holds commits not yet in the main file, the file is opened as immutable
    (there is nothing else to read, and nobody can write next to it)."""
    uri = "file:" + quote(str(path.resolve()))
    conn = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=60.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        wal = Path(f"{path}-wal")
        if (wal.exists() and wal.stat().st_size > 0) or os.access(path.parent, os.W_OK):
            raise
    return sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, isolation_level=None, check_same_thread=False)


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


def reads(fn: F | None = None, *, job: bool = False) -> Any:
    """Decorate a read of the table (first argument: the table): an SQLite error (a malformed
    page, an I/O error) becomes a TableError naming the file and, with ``job``, the job the
    second argument names."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def read(table: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(table, *args, **kwargs)
            except sqlite3.DatabaseError as err:
                which = f" (job {args[0]})" if job and args else ""
                raise db_error(table.path, err, f"cannot read job table{which}") from err

        return read  # type: ignore[return-value]

    return wrap if fn is None else wrap(fn)


class WriteTx:
    """``with WriteTx(conn, path) as c:`` runs the block in one ``BEGIN IMMEDIATE`` transaction:
    committed when it ends, rolled back on an exception; SQLite errors become TableErrors naming
    the file."""

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
