"""Code snapshots: the code a job runs, frozen when the job is dispatched.

At the first dispatch of a job (``near sweep run`` launching it, ``near sweep submit`` queueing
it; again after a ``reset``) the workdir's files are copied to
``<exp>/snapshots/<digest>/``, where ``digest`` hashes the files' paths and contents: an unchanged
tree reuses its snapshot. The job's run dir records which snapshot it runs (``snapshot`` file), and
its command runs from there: cwd is the snapshot, ``PYTHONPATH`` starts with it (so ``near ...``
imports the snapshot's ``near``, not the editable install of the live tree) and ``NEAR_CFG_DIR``
points at its ``cfg/``. Retries, requeues and attempts stopped by Ctrl-C keep the job's snapshot (a
resumed run keeps its code); only a ``reset`` takes the tree anew.

Copied: the files git lists (tracked and untracked-not-ignored), or every file when the workdir is
not a git repository; never ``.git``, ``.venv``, ``experiments/``, ``__pycache__``, the experiment
folder in use wherever it is (``--root results`` inside the workdir) nor any other experiment
folder (one holding a job table, ``jobs.db``), nor motion data: ``cfg/task/motions/humanoid/`` is
a link to the workdir's folder. Beside each
snapshot, ``<digest>.json`` holds the git commit, whether the tree was dirty, the untracked files and
the size, and ``<digest>.diff`` the output of ``git diff HEAD``.
"""

from __future__ import annotations

import compileall
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

SNAPSHOT_DIR = "snapshots"
RECORD_FILE = "snapshot"            # in a job's run dir: the snapshot it runs
WARN_BYTES = 50 * 1024 * 1024       # larger snapshots are still taken, with a warning
META_KEY = "snapshot"               # job table meta: "false" when the spec opted out
_SKIP_TOP = {".git", ".venv", "experiments"}
TABLE_FILE = "jobs.db"              # marks an experiment folder (its job table); never frozen
#: motion data (NEAR's mocap is tens of MB) is never copied: a snapshot links to the workdir's folder
MOTION_DATA = "cfg/task/motions/humanoid"


@dataclass(frozen=True)
class Snapshot:
    """One frozen copy of a workdir."""

    path: Path
    digest: str
    commit: str | None
    dirty: bool
    size: int

    def label(self) -> str:
        """``<path> (commit abc1234[, dirty])``."""
        commit = self.commit[:12] if self.commit else "no git commit"
        return f"{self.path} ({commit}{', dirty' if self.dirty else ''})"


def _git(workdir: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(workdir), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _keep(rel: str) -> bool:
    parts = rel.split("/")
    return (parts[0] not in _SKIP_TOP and "__pycache__" not in parts and not parts[0].endswith(".egg-info")
            and not rel.startswith(MOTION_DATA + "/"))


def _outside(rel: str, folders: Iterable[str]) -> bool:
    return not any(rel == f or rel.startswith(f + "/") for f in folders)


def tree_files(workdir: Path, exclude: Iterable[str] = ()) -> list[str]:
    """The workdir's files to freeze, as sorted relative paths; never those under ``exclude``
    (relative folders) or under a folder holding a job table (an experiment)."""
    skip = {e for e in exclude if e and e != "."}
    listed = _git(workdir, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    rels = [r for r in (listed or "").split("\0") if r]
    if not rels:  # not a git repository (or a folder git ignores): every file
        for root, dirs, files in os.walk(workdir):
            rel_root = os.path.normpath(os.path.relpath(root, workdir))
            if TABLE_FILE in files and rel_root != ".":
                skip.add(rel_root)
                dirs[:] = []
                continue
            dirs[:] = [d for d in dirs if d != "__pycache__" and not (rel_root == "." and d in _SKIP_TOP)]
            rels += [os.path.normpath(os.path.join(rel_root, f)) for f in files]
    skip |= {os.path.dirname(r) for r in rels if os.path.basename(r) == TABLE_FILE and os.path.dirname(r)}
    return sorted(r for r in set(rels) if _keep(r) and _outside(r, skip) and (workdir / r).is_file())


def _inside(path: Path, workdir: Path) -> str | None:
    """``path`` relative to ``workdir`` when it lies inside it, else None."""
    try:
        return path.resolve().relative_to(workdir).as_posix()
    except ValueError:
        return None


def _hash_file(h: Any, rel: str, data: bytes, executable: bool) -> None:
    """Feed one file into the tree's digest ``h`` (a hashlib object)."""
    h.update(f"{rel}\0{int(executable)}\0{len(data)}\0".encode())
    h.update(data)


def _read(path: Path) -> bytes | None:
    """The file's bytes, or None when it vanished since it was listed (the tree is being edited)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def tree_digest(workdir: Path, rels: Iterable[str]) -> tuple[str, int]:
    """(sha256 over the files' paths, executable bits and contents, total bytes)."""
    h = hashlib.sha256()
    size = 0
    for rel in rels:
        p = workdir / rel
        data = _read(p)
        if data is None:
            continue
        size += len(data)
        _hash_file(h, rel, data, os.access(p, os.X_OK))
    return h.hexdigest()[:16], size


def _copy_tree(workdir: Path, rels: Iterable[str], dst_root: Path) -> tuple[str, int, list[str]]:
    """Copy the files to ``dst_root``; returns the digest and size of the bytes written (the same
    as :func:`tree_digest` of the tree as it was when each file was read) and the files copied."""
    h = hashlib.sha256()
    size = 0
    copied = []
    for rel in rels:
        src, dst = workdir / rel, dst_root / rel
        data = _read(src)
        if data is None:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        try:
            shutil.copystat(src, dst)
        except FileNotFoundError:
            pass
        size += len(data)
        _hash_file(h, rel, data, os.access(dst, os.X_OK))
        copied.append(rel)
    return h.hexdigest()[:16], size, copied


def take(exp_dir: str | os.PathLike, workdir: str | os.PathLike, *,
         warn: Callable[[str], None] = print) -> Snapshot:
    """The snapshot of ``workdir``'s current files under ``exp_dir/snapshots`` (made if new)."""
    workdir = Path(workdir).resolve()
    root = Path(exp_dir) / SNAPSHOT_DIR
    rels = tree_files(workdir, [r for r in [_inside(Path(exp_dir), workdir)] if r])
    digest, size = tree_digest(workdir, rels)
    target = root / digest
    meta_file = root / f"{digest}.json"
    meta = _read_meta(meta_file) if target.is_dir() else None
    if meta is not None:
        return Snapshot(target, digest, meta.get("commit"), bool(meta.get("dirty")), int(meta.get("size", size)))
    if size > WARN_BYTES:
        warn(f"near: warning: the code snapshot of {workdir} is {size / 2**20:.0f} MB ({len(rels)} files, more "
             f"than {WARN_BYTES // 2**20} MB); set `snapshot: false` in the sweep spec to run from the live tree")
    commit = (_git(workdir, "rev-parse", "HEAD") or "").strip() or None
    diff = _git(workdir, "diff", "HEAD", "--binary") or "" if commit else ""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{digest}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # named by what was copied: a file saved between the digest above and its copy must not end up
    # in a snapshot named after its old content (a later tree with that content would reuse it)
    digest, size, rels = _copy_tree(workdir, rels, tmp)
    target = root / digest
    meta_file = root / f"{digest}.json"
    kept = set(rels)
    if target.is_dir() and _read_meta(meta_file) is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        return describe(target) or Snapshot(target, digest, commit, False, size)
    untracked = [r for r in (_git(workdir, "ls-files", "--others", "--exclude-standard") or "").splitlines()
                 if r in kept]
    if (workdir / MOTION_DATA).is_dir():
        (tmp / MOTION_DATA).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(workdir / MOTION_DATA, tmp / MOTION_DATA)
    # compiled now, so that jobs never write __pycache__ into the frozen tree
    compileall.compile_dir(str(tmp), quiet=2, workers=1)
    for dirpath, _, files in os.walk(tmp):
        for f in files:
            p = os.path.join(dirpath, f)
            os.chmod(p, os.stat(p).st_mode & ~0o222)   # read-only files; dirs stay removable
    (root / f"{digest}.diff").write_text(diff)
    meta = {"workdir": str(workdir), "commit": commit, "dirty": bool(diff.strip() or untracked),
            "untracked": untracked, "files": len(rels), "size": size, "created": time.time()}
    # whole or absent, whoever reads it (another dispatcher of the same tree, `show`), even if this
    # process is killed while writing it
    part = meta_file.with_name(f".{meta_file.name}.{os.getpid()}")
    part.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(part, meta_file)
    try:
        os.rename(tmp, target)
    except OSError:  # another dispatcher made the same snapshot meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return Snapshot(target, digest, commit, meta["dirty"], size)


def enabled(meta: dict[str, str]) -> bool:
    """Whether the sweep takes snapshots (its spec did not say ``snapshot: false``)."""
    return meta.get(META_KEY, "true") != "false"


def assign(run_dir: str | os.PathLike, snap: Snapshot, first: bool) -> Path:
    """Record that the job in ``run_dir`` runs ``snap``, unless this is not its ``first`` dispatch
    since its last reset and an earlier attempt already runs one (a stopped, interrupted or crashed
    job resumes its checkpoint with the code that wrote it); returns the snapshot the job runs."""
    rec = Path(run_dir) / RECORD_FILE
    current = recorded(run_dir)
    if current is not None and not first:
        return current
    rec.parent.mkdir(parents=True, exist_ok=True)
    tmp = rec.with_name(RECORD_FILE + ".tmp")
    tmp.write_text(f"{snap.path.resolve()}\n")
    os.replace(tmp, rec)
    return snap.path


def recorded(run_dir: str | os.PathLike) -> Path | None:
    """The snapshot the job in ``run_dir`` runs, or None (it runs from the live workdir)."""
    rec = Path(run_dir) / RECORD_FILE
    try:
        path = Path(rec.read_text().strip())
    except OSError:
        return None
    return path if path.is_dir() else None


def _read_meta(meta_file: Path) -> dict | None:
    """A snapshot's metadata, or None when it is missing or unreadable (then the snapshot is taken
    again, which writes it anew)."""
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def describe(path: Path) -> Snapshot | None:
    """The snapshot at ``path`` with its recorded commit, or None when its metadata is missing."""
    meta = _read_meta(path.parent / f"{path.name}.json")
    if meta is None:
        return None
    return Snapshot(path, path.name, meta.get("commit"), bool(meta.get("dirty")), int(meta.get("size", 0)))


class Snapshotter:
    """One dispatcher's snapshots: taken once per workdir (the tree at the first dispatch of this
    ``run``/``submit``), then reused for every job it dispatches."""

    def __init__(self, exp_dir: str | os.PathLike, table_meta: dict[str, str], log: Callable[[str], None] = print):
        self.exp_dir = Path(exp_dir)
        self.on = enabled(table_meta)
        self.log = log
        self._taken: dict[str, Snapshot] = {}

    def freeze(self, job, first: bool) -> Path | None:
        """Record the snapshot ``job`` (a just-claimed JobRecord) runs; ``first``: this is the job's
        first claim since it was added or reset (else an earlier attempt's snapshot is kept).
        None when snapshots are off or the job has no workdir (added without a spec: it runs
        wherever it is dispatched from)."""
        if not self.on or not job.workdir:
            return None
        if not first:
            current = recorded(job.run_dir)
            if current is not None:  # no need to hash the tree: the job keeps its code
                return current
        workdir = job.workdir
        snap = self._taken.get(workdir)
        if snap is None:
            snap = self._taken[workdir] = take(self.exp_dir, workdir, warn=self.log)
            self.log(f"code snapshot {snap.label()}")
        return assign(job.run_dir, snap, first)
