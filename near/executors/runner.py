"""Launching one job: shared by the local and SLURM executors.

``prepare(job)`` creates the run dir and writes ``command.sh`` (the exact command, placeholders
resolved, runnable by hand to reproduce the job). ``launch(job)`` starts the supervisor
``python -m near.executors.runner RUN_DIR`` in its own session with stdout/stderr appended to
``RUN_DIR/stdout.log`` / ``stderr.log``.

The supervisor (``main``) holds an exclusive ``flock`` on ``RUN_DIR/.near.lock`` while the job runs
(a stray earlier attempt never writes into the run dir at the same time; a controller tells a live
attempt from a dead one by it), asks the kernel to signal it when its parent dies (a SIGKILLed
controller leaves no orphans: that is one stop, however many times the signal comes) and runs
``bash command.sh`` in a process group of its own. It is the job's subreaper: what the job started
in a session of its own (``setsid cmd &``, a daemon) is killed with the rest when the job ends.

One signal path: the controller signals the supervisor only (:func:`stop`); the supervisor
forwards the first SIGTERM/SIGINT to the job's group once, and a second one as SIGKILL.
``command.sh`` runs the job's command in a subshell with default signal dispositions, so the job's
exit status is its own (a signal between two of its commands, in a builtin or ``$(...)`` ends it
with 128+N, never 0). The supervisor writes the attempt's outcome file (``outcomes.FINISHED``, into
space reserved when it started, so a full disk cannot lose it): the job's status, except that a job
it stopped which neither finished (0) nor refused its config (2) is recorded interrupted
(``EXIT_INTERRUPTED``, resumable), whatever status the signal left.
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
from near.exitcodes import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK
from near.snapshot import recorded
from near.sweep.dispatch import leads_elsewhere

if TYPE_CHECKING:
    from near.jobtable import JobRecord

COMMAND_FILE = "command.sh"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
LOCK_FILE = ".near.lock"
PGID_FILE = ".near.pgid"    # the job's process group, for a controller whose supervisor is gone
# what the kernel sends a supervisor whose controller died: its own signal, so that however many
# times it comes it is read as one stop (the supervisor runs in its own session: no terminal hangs up)
PARENT_DEATH_SIGNAL = signal.SIGHUP
#: the checkpoint of ``near train`` jobs (near's trainers write it; see near.training.entry)
TRAINER_CHECKPOINT = "nn/checkpoint.pth"


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
    checkpoint: str | None = None

    @classmethod
    def of(cls, job: "JobRecord | Task") -> "Task":
        """The task of a job record (a task is returned as it is)."""
        if isinstance(job, Task):
            return job
        return cls(job.job_id, job.sweep, job.stage, job.command, job.run_dir, job.workdir, dict(job.params),
                   job.dep_run_dirs(), declared_checkpoint(job.command, job.resources))


def declared_checkpoint(command: str, resources: dict) -> str | None:
    """The job's checkpoint (a path or glob relative to its run dir): its spec's
    ``resources.checkpoint``, else near's trainers' own for ``near train`` commands, else None (then
    nothing the job writes counts as progress)."""
    if resources.get("checkpoint"):
        return str(resources["checkpoint"])
    words = command.split()
    for a, b in zip(words, words[1:]):
        if os.path.basename(a) == "near" and b == "train":
            return TRAINER_CHECKPOINT
    return None


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
        "# The command runs in a subshell with default signal dispositions: a SIGTERM ends it (or\n"
        "# its own traps do), and its exit status, not this shell's, is the job's. This shell only\n"
        "# waits for it (a trapped signal is taken after the foreground subshell exits).\n"
        "trap : TERM INT\n"
        "(\n"
        f"{job.command}\n"
        ")\n"
        "exit $?\n"
    )


def job_env(job: "JobRecord | Task") -> dict[str, str]:
    """The environment a job's command runs in (what ``command.sh`` exports): this interpreter's
    bin dir first on PATH, so ``near ...`` commands find the installation that dispatched them even
    where PATH does not have it (a SLURM node's batch shell), the job's id and run dir, and its code
    snapshot's variables."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(NEAR_JOB_ID=job.job_id, NEAR_RUN_DIR=job.run_dir, PYTHONUNBUFFERED="1")
    ckpt = job.checkpoint if isinstance(job, Task) else declared_checkpoint(job.command, job.resources)
    if ckpt:
        env["NEAR_CHECKPOINT"] = ckpt
    snap = _snapshot_vars(job)
    if snap:
        old = env.get("PYTHONPATH")
        snap["PYTHONPATH"] += os.pathsep + old if old else ""
        env.update(snap)
    return env


def prepare(job: "JobRecord | Task") -> Path:
    """Create the job's run dir and write ``command.sh``; returns the run dir."""
    run_dir = Path(job.run_dir)
    real = leads_elsewhere(run_dir)  # OSError: dispatch records the job failed, naming the link
    if real is not None:
        raise OSError(f"job {job.job_id}: run dir {run_dir} is a link to {real}; near does not write "
                      "through it (remove the link)")
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


def signal_supervisor(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the job's supervisor only (it forwards a stop to the job's group once)."""
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_job_group(run_dir: str | os.PathLike) -> None:
    """SIGKILL what is left of the job's process group (recorded by its supervisor)."""
    try:
        pgid = int((Path(run_dir) / PGID_FILE).read_text())
        os.killpg(pgid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def stop(proc: subprocess.Popen, run_dir: str | os.PathLike, grace_s: float = 10.0) -> int | None:
    """Stop one attempt: SIGTERM its supervisor (which stops the job and writes its outcome), after
    ``grace_s`` a second SIGTERM (the supervisor SIGKILLs the job), then, should the supervisor
    itself hang, SIGKILL it and the job's group. Returns the supervisor's exit status."""
    if proc.poll() is None:
        signal_supervisor(proc)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                proc.wait(timeout=grace_s)
                break
            except subprocess.TimeoutExpired:
                signal_supervisor(proc, sig)
                grace_s = 5.0
        else:
            proc.wait()
    kill_job_group(run_dir)  # a child that ignored SIGTERM may linger after a killed supervisor
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


def _become_subreaper() -> None:
    """Make this process the reaper of the job's orphans: a process the job started in a session
    or group of its own (``setsid cmd &``, a daemon's double fork) becomes this process's child when
    its parent exits, instead of init's, so that it cannot outlive the attempt."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except OSError:  # not Linux: only the job's process group is stopped
        pass


def _children() -> set[int]:
    """This process's children (the job's orphans once its shell exited), from /proc."""
    kids: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as fh:
                kids.update(int(p) for p in fh.read().split())
        except (OSError, ValueError):
            continue
    return kids


def _kill_orphans(rounds: int = 100, wait_s: float = 5.0) -> None:
    """SIGKILL and reap every process the job left outside its group: each one killed hands its
    own children on to this process, so this repeats until none is left (bounded: a job forking
    faster than it is killed is still cut off after ``rounds``; one that a SIGKILL cannot end at
    once, stuck in the kernel on a dead file server, is left to init after ``wait_s``)."""
    end = time.monotonic() + wait_s
    for _ in range(rounds):
        kids = _children()
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        while kids and time.monotonic() < end:
            for pid in list(kids):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        kids.discard(pid)
                except ChildProcessError:
                    kids.discard(pid)
            if kids:
                time.sleep(0.01)
        if kids:
            return


def attempt_running(run_dir: str | os.PathLike) -> bool:
    """Whether a supervisor holds the run dir's lock (an attempt of the job is alive)."""
    try:
        fh = open(Path(run_dir) / LOCK_FILE, "a")
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def attempt_status(status: int, stopped: bool) -> int:
    """The status an attempt's outcome records: the job's own, except that a job the supervisor
    stopped which neither finished (0) nor refused its config (2) was interrupted (resumable)."""
    if stopped and status not in (EXIT_OK, EXIT_CONFIG):
        return EXIT_INTERRUPTED
    return status


def main(argv: list[str] | None = None) -> int:
    """Supervisor: ``python -m near.executors.runner RUN_DIR``."""
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    parent = os.getppid()
    _set_parent_death_signal(PARENT_DEATH_SIGNAL)
    _become_subreaper()
    if os.getppid() != parent:  # the controller died before prctl took effect
        return 128 + signal.SIGTERM
    stops: list[int] = []
    child: subprocess.Popen | None = None

    def forward(signum, frame):  # the first stop: SIGTERM to the job's group; the next: SIGKILL
        stops.append(signum)
        if child is not None:
            try:
                os.killpg(child.pid, signal.SIGTERM if len(stops) == 1 else signal.SIGKILL)
            except ProcessLookupError:
                pass

    def parent_died(signum, frame):
        # The kernel sends the parent-death signal again each time a dying controller's threads
        # hand this process on to one another, so a SIGKILLed controller with three threads sends
        # it three times: it is one stop, never the second stop that SIGKILLs the job.
        if not stops:
            forward(signal.SIGTERM, frame)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(PARENT_DEATH_SIGNAL, parent_died)
    lock = open(run_dir / LOCK_FILE, "a")
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if stops:
                return 128 + stops[0]
            print(f"near: waiting for an earlier attempt to release {run_dir / LOCK_FILE}", file=sys.stderr)
            time.sleep(1.0)
    try:
        reserved = outcomes.reserve(run_dir)
    except OSError as err:  # a full disk: the controller falls back on the exit status
        print(f"near: cannot reserve the outcome file ({err})", file=sys.stderr)
        reserved = None
    child = subprocess.Popen(["bash", str(run_dir / COMMAND_FILE)], stdin=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        (run_dir / PGID_FILE).write_text(str(child.pid))
    except OSError:
        pass
    if stops:  # a stop that came while the job was being started
        os.killpg(child.pid, signal.SIGTERM)
    kill_after = float(os.environ.get("NEAR_KILL_AFTER_S", "60"))
    signalled_at = None
    while True:
        try:
            rc = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if stops:
                signalled_at = signalled_at or time.monotonic()
                if time.monotonic() - signalled_at > kill_after:
                    _kill_group(child.pid)
    # what the job left running in its group (a background command, a child ignoring SIGTERM), and
    # outside it: nothing of this attempt may still write into the run dir once its outcome is read
    _kill_group(child.pid)
    _kill_orphans()
    own = 128 - rc if rc < 0 else rc
    status = attempt_status(own, bool(stops))
    reason = None
    if status != own:
        reason = f"interrupted by {_signame(stops[0])} (its exit status {own})"
    try:
        outcomes.write_outcome(run_dir, outcomes.Outcome(
            job_id=os.environ.get("NEAR_JOB_ID", run_dir.name), kind=outcomes.FINISHED, exit_code=status,
            scheduler_id=os.environ.get("NEAR_LAUNCH_ID") or None, reason=reason,
            progress=outcomes.checkpoint_progress(run_dir, os.environ.get("NEAR_CHECKPOINT"))), reserved)
    except OSError as err:
        print(f"near: cannot write the outcome file ({err})", file=sys.stderr)
    # the outcome is on disk: a signal from now on changes nothing (the controller reads the file)
    for sig in (signal.SIGTERM, signal.SIGINT, PARENT_DEATH_SIGNAL):
        signal.signal(sig, signal.SIG_IGN)
    return status


def _signame(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _kill_group(pgid: int) -> None:
    """SIGKILL every process left in the job's group."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(main())
