"""Launching one job: shared by the local and SLURM executors.

``prepare(job)`` creates the run dir and writes ``command.sh`` (the exact command, placeholders
resolved, runnable by hand to reproduce the job). ``launch(job)`` starts
``python -m near.executors.runner RUN_DIR`` in its own session (process group) with stdout/stderr
appended to ``RUN_DIR/stdout.log`` / ``stderr.log``.

That supervisor process (``main``) holds an exclusive ``flock`` on ``RUN_DIR/.near.lock`` while the
job runs (a stray earlier attempt can never write into the run dir at the same time), asks the
kernel to SIGTERM it when its parent dies (a SIGKILLed controller leaves no orphans), runs
``bash command.sh`` in the same process group, forwards SIGTERM/SIGINT to the whole group, SIGKILLs
what is left of the group once the job's shell exited (or ``NEAR_KILL_AFTER_S`` after the signal),
writes the attempt's outcome file (``outcomes.FINISHED`` with the exit status, into space reserved
when it started, so a full disk cannot lose it) and exits with the job's status (128+N when the job
died of signal N).

``stop(proc)`` is SIGTERM to the group -> wait ``grace_s`` -> SIGKILL.
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from near.executors import outcomes
from near.snapshot import recorded

if TYPE_CHECKING:
    from near.jobtable import JobRecord

COMMAND_FILE = "command.sh"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
LOCK_FILE = ".near.lock"
# Exit status of near's trainers after a graceful SIGTERM/SIGUSR2: checkpoint written, resumable.
EXIT_INTERRUPTED = 3


@dataclass(frozen=True)
class Task:
    """What it takes to run one job, without the job table (a SLURM node gets this in its pickle)."""

    job_id: str
    sweep: str
    stage: str
    command: str
    run_dir: str
    workdir: str | None
    params: dict
    dep_dirs: dict[str, str]

    @classmethod
    def of(cls, job: "JobRecord | Task") -> "Task":
        """The task of a job record (a task is returned as it is)."""
        if isinstance(job, Task):
            return job
        return cls(job.job_id, job.sweep, job.stage, job.command, job.run_dir, job.workdir, dict(job.params),
                   job.dep_run_dirs())


def job_cwd(job: "JobRecord | Task") -> str:
    """Where the job's command runs: its code snapshot (see near.snapshot), else its workdir."""
    snap = recorded(job.run_dir)
    return str(snap) if snap is not None else (job.workdir or os.getcwd())


def _snapshot_vars(job: "JobRecord | Task") -> dict[str, str]:
    """The variables that make ``near``/``python`` in the job resolve to its snapshot: PYTHONPATH
    first (ahead of the editable install of the live tree), its cfg/, and NEAR_SNAPSHOT."""
    snap = recorded(job.run_dir)
    if snap is None:
        return {}
    out = {"NEAR_SNAPSHOT": str(snap), "PYTHONPATH": str(snap)}
    if (snap / "cfg" / "config.yaml").is_file():
        out["NEAR_CFG_DIR"] = str(snap / "cfg")
    return out


def command_script(job: "JobRecord | Task") -> str:
    """The text of ``command.sh`` for ``job``."""
    job = Task.of(job)
    workdir = job_cwd(job)
    snap = _snapshot_vars(job)
    snap_lines = ""
    if snap:
        pp = snap.pop("PYTHONPATH")
        snap_lines = ("# runs the code snapshot taken at dispatch, not the live tree\n"
                      f"export PYTHONPATH={shlex.quote(pp)}${{PYTHONPATH:+:$PYTHONPATH}}\n"
                      + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in snap.items()))
    point = " ".join(f"{k}={v}" for k, v in job.params.items())
    deps = "".join(f"\n#   {ref}: {path}" for ref, path in job.dep_dirs.items())
    bindir = os.path.dirname(sys.executable)
    return (
        "#!/usr/bin/env bash\n"
        f"# near job {job.job_id} (sweep {job.sweep}, stage {job.stage}) {point}\n"
        f"# run dir: {job.run_dir}{(chr(10) + '# needs:' + deps) if deps else ''}\n"
        "# Reproduce: bash command.sh (running it again in the same run dir resumes)\n"
        f"cd {shlex.quote(workdir)} || exit 2\n"
        f"export PATH={shlex.quote(bindir)}:\"$PATH\"\n"
        f"export NEAR_JOB_ID={job.job_id} NEAR_RUN_DIR={shlex.quote(job.run_dir)}\n"
        f"{snap_lines}"
        "# SIGTERM/SIGINT reach the whole process group; without a trap bash would exit at once and\n"
        "# its job would be SIGKILLed mid-checkpoint. Trapped, bash waits for the running command and\n"
        "# then exits with its status: the commands after it never start.\n"
        "trap 'exit $?' TERM INT\n"
        f"{job.command}\n"
    )


def job_env(job: "JobRecord | Task") -> dict[str, str]:
    """The environment a job's command runs in (what ``command.sh`` exports): this interpreter's
    bin dir first on PATH, so ``near ...`` commands find the installation that dispatched them even
    where PATH does not have it (a SLURM node's batch shell), the job's id and run dir, and its code
    snapshot's variables."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(NEAR_JOB_ID=job.job_id, NEAR_RUN_DIR=job.run_dir, PYTHONUNBUFFERED="1")
    snap = _snapshot_vars(job)
    if snap:
        old = env.get("PYTHONPATH")
        snap["PYTHONPATH"] += os.pathsep + old if old else ""
        env.update(snap)
    return env


def prepare(job: "JobRecord | Task") -> Path:
    """Create the job's run dir and write ``command.sh``; returns the run dir."""
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    script = run_dir / COMMAND_FILE
    tmp = run_dir / (COMMAND_FILE + ".tmp")
    tmp.write_text(command_script(job))
    os.replace(tmp, script)
    return run_dir


def launch(job: "JobRecord", launch_id: str = "") -> subprocess.Popen:
    """Prepare and start ``job`` under the supervisor, in a new session; returns the Popen.
    ``launch_id`` goes into the attempt's outcome (``scheduler_id``), telling its attempts apart."""
    run_dir = prepare(job)
    header = f"=== near: job {job.job_id} attempt {job.attempts} started {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n"
    out = open(run_dir / STDOUT_FILE, "ab")
    err = open(run_dir / STDERR_FILE, "ab")
    try:
        out.write(header.encode())
        out.flush()
        return subprocess.Popen(
            [sys.executable, "-m", "near.executors.runner", str(run_dir)],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**job_env(job), "NEAR_LAUNCH_ID": launch_id}, close_fds=True,
        )
    finally:
        out.close()
        err.close()


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the job's process group (ignore it if already gone)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> int | None:
    """SIGTERM the job's group, wait up to ``grace_s``, then SIGKILL it. Returns the exit status."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait()
    # the supervisor may be gone while a child ignoring SIGTERM lingers in the group
    signal_group(proc, signal.SIGKILL)
    return proc.returncode


def exit_status(returncode: int) -> int:
    """Shell-style status: 128+N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _set_parent_death_signal(sig: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except OSError:  # not Linux: leases still catch a dead controller
        pass


def main(argv: list[str] | None = None) -> int:
    """Supervisor: ``python -m near.executors.runner RUN_DIR``."""
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    parent = os.getppid()
    _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the controller died before prctl took effect
        return 128 + signal.SIGTERM
    terminating = {"sig": None}

    def on_signal(signum, frame):  # forward once to the whole group (the job and its children)
        if terminating["sig"] is None:
            terminating["sig"] = signum
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                os.killpg(os.getpgrp(), signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lock = open(run_dir / LOCK_FILE, "a")
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if terminating["sig"] is not None:
                return 128 + terminating["sig"]
            print(f"near: waiting for an earlier attempt to release {run_dir / LOCK_FILE}", file=sys.stderr)
            time.sleep(1.0)
    try:
        reserved = outcomes.reserve(run_dir)
    except OSError as err:  # a full disk: the controller falls back on the exit status
        print(f"near: cannot reserve the outcome file ({err})", file=sys.stderr)
        reserved = None
    child = subprocess.Popen(["bash", str(run_dir / COMMAND_FILE)], stdin=subprocess.DEVNULL)
    kill_after = float(os.environ.get("NEAR_KILL_AFTER_S", "60"))
    signalled_at = None
    while True:
        try:
            rc = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if terminating["sig"] is not None:
                signalled_at = signalled_at or time.monotonic()
                if time.monotonic() - signalled_at > kill_after:
                    _kill_rest_of_group()
        except InterruptedError:
            continue
    # what the job left running in the group (a background command, a child ignoring SIGTERM)
    _kill_rest_of_group()
    status = 128 - rc if rc < 0 else rc
    try:
        outcomes.write_outcome(run_dir, outcomes.Outcome(
            job_id=os.environ.get("NEAR_JOB_ID", run_dir.name), kind=outcomes.FINISHED, exit_code=status,
            scheduler_id=os.environ.get("NEAR_LAUNCH_ID") or None,
            progress=outcomes.checkpoint_progress(run_dir)), reserved)
    except OSError as err:
        print(f"near: cannot write the outcome file ({err})", file=sys.stderr)
    return status


def _kill_rest_of_group() -> None:
    """SIGKILL every other process of this process group (the supervisor's own group)."""
    me, group = os.getpid(), os.getpgrp()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.getpgid(int(entry)) == group:
                os.kill(int(entry), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


if __name__ == "__main__":
    sys.exit(main())
