"""Chaos check of the local controller: interrupt it every way a user or a machine does, then
count what happened to every job.

A sweep of short shell jobs (0.2-0.9 s; a loop of builtins, ``$(...)`` and sleeps, so that a signal
lands anywhere), each appending ``start <job>`` and ``end <job>`` lines to one O_APPEND log, half of
the scenarios with a user ``trap ... EXIT`` in the job. Per trial, one scenario, seeded:

- ``sigint`` / ``sigterm`` / ``sigkill``: one controller (``-j 4``) interrupted with that signal at
  random times, again and again, then run to the end;
- ``race``: two controllers at once, one of them interrupted with a random signal each round;
- ``killed_beside_live``: controller A SIGKILLed while B runs; B must finish A's jobs without
  waiting for A's lease (``--lease 30``).

Counted at the end (every job must be recorded done):

- ``exactly_once``: jobs with one start and one end line;
- ``rerun_after_interruption``: jobs that ran more than once, each extra run after an attempt the
  table recorded as interrupted, stopped or lost (allowed: it was interrupted mid-run);
- ``done_without_end``: jobs recorded done without an end line (must be 0);
- ``ran_twice_uninterrupted``: started more than once with no interruption recorded (must be 0);
- ``not_done``: jobs not recorded done (must be 0).

    python benchmarks/chaos_local.py --trials 50 [--jobs 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ("sigint", "sigterm", "sigkill", "race", "killed_beside_live")
SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}
_INTERRUPTED = ("interrupted", "stopped", "lease", "SIGINT", "SIGTERM", "killed", "lost")


def job_command(log: Path, user_trap: bool) -> str:
    """The shell code of one job: start line, a loop of builtins, substitutions and sleeps, end line."""
    trap = 'trap "rm -f \\"$NEAR_RUN_DIR/scratch\\"" EXIT; touch "$NEAR_RUN_DIR/scratch"; ' if user_trap else ""
    return (f'{trap}echo "start $NEAR_JOB_ID" >> {log}; i=${{i}}; n=$(( i % 4 + 2 )); '
            'for k in $(seq $n); do x=$(echo $k); sleep 0.1; : $x; done; '
            f'echo "end $NEAR_JOB_ID" >> {log}')


def write_sweep(root: Path, jobs: int, user_trap: bool) -> Path:
    """A sweep of ``jobs`` jobs in ``root``, added; returns its experiment folder."""
    log = root / "log.txt"
    (root / "sweeps").mkdir(parents=True, exist_ok=True)
    spec = root / "sweeps" / "chaos.yaml"
    command = job_command(log, user_trap).replace("'", "''")
    spec.write_text(f"name: chaos\nworkdir: ..\nsnapshot: false\nmax_attempts: 3\naxes:\n  i: {{count: {jobs}}}\n"
                    f"stages:\n  - name: job\n    command: '{command}'\n")
    near("sweep", "add", str(spec), cwd=root)
    return root / "experiments" / "chaos"


def near(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "near", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"near {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def controller(exp: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "near", "sweep", "run", str(exp), "-j", "4", "--grace", "3",
                             "--progress", "1000", *extra], cwd=exp.parent.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def jobs_started(log: Path) -> int:
    """Start lines in the shared log so far."""
    try:
        return log.read_text().count("start ")
    except FileNotFoundError:
        return 0


def after_a_start(log: Path, procs: list[subprocess.Popen], rng: random.Random, most_s: float) -> None:
    """Wait until a new job started (the controllers are up, however loaded the machine), then a
    random moment more, so that the signal lands while jobs run."""
    before, end = jobs_started(log), time.monotonic() + 120
    while jobs_started(log) == before and time.monotonic() < end and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, most_s))


def interrupt(p: subprocess.Popen, sig: int) -> None:
    if p.poll() is None:
        p.send_signal(sig)
    p.wait(timeout=120)


def run_scenario(root: Path, scenario: str, rng: random.Random, jobs: int, rounds: int, user_trap: bool) -> dict:
    """Run one scenario in ``root``; returns its counts."""
    exp = write_sweep(root, jobs, user_trap)
    log = root / "log.txt"
    t0 = time.monotonic()
    for _ in range(rounds):
        if scenario in SIGNALS:
            p = controller(exp, "--lease", "5")
            after_a_start(log, [p], rng, 2.0)
            interrupt(p, SIGNALS[scenario])
        elif scenario == "race":
            a, b = controller(exp, "--lease", "5"), controller(exp, "--lease", "5")
            after_a_start(log, [a, b], rng, 2.0)
            interrupt(rng.choice([a, b]), rng.choice(list(SIGNALS.values())))
            for p in (a, b):
                interrupt(p, signal.SIGINT)
        else:  # killed_beside_live: B finishes, A's jobs included, long before A's lease would expire
            a = controller(exp, "--lease", "30")
            after_a_start(log, [a], rng, 0.5)
            b = controller(exp, "--lease", "30")
            after_a_start(log, [a, b], rng, 1.0)
            interrupt(a, signal.SIGKILL)
            b.wait(timeout=120)
            break
    near("sweep", "run", str(exp), "-j", "4", cwd=root)  # to the end, uninterrupted
    counts = count(exp, root / "log.txt")
    counts["seconds"] = round(time.monotonic() - t0, 1)
    return counts


def count(exp: Path, log: Path) -> dict:
    """What happened to every job (see the module docstring)."""
    from near.jobtable import JobTable

    lines = log.read_text().split("\n") if log.exists() else []
    starts = Counter(line.split()[1] for line in lines if line.startswith("start "))
    ends = Counter(line.split()[1] for line in lines if line.startswith("end "))
    c = Counter()
    with JobTable.open(exp) as table:
        jobs = table.jobs()
        histories = table.histories([j.job_id for j in jobs])
    for j in jobs:
        interrupted = any(e.reason and any(w in e.reason for w in _INTERRUPTED) for e in histories[j.job_id])
        c["jobs"] += 1
        if j.state != "done":
            c["not_done"] += 1
        elif ends[j.job_id] == 0:
            c["done_without_end"] += 1
        if starts[j.job_id] == 1 and ends[j.job_id] == 1:
            c["exactly_once"] += 1
        elif starts[j.job_id] > 1 and interrupted:
            c["rerun_after_interruption"] += 1
        if starts[j.job_id] > 1 and not interrupted:
            c["ran_twice_uninterrupted"] += 1
        c["charged"] += j.charged
    for key in ("not_done", "done_without_end", "ran_twice_uninterrupted"):
        c.setdefault(key, 0)
    return dict(c)


def bad(counts: dict) -> int:
    """How many jobs broke the promise (must be 0)."""
    return counts["not_done"] + counts["done_without_end"] + counts["ran_twice_uninterrupted"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=40, help="jobs per trial (default 40)")
    ap.add_argument("--rounds", type=int, default=3, help="interruptions per trial (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    total: Counter = Counter()
    by_scenario: dict[str, Counter] = {s: Counter() for s in SCENARIOS}
    t0 = time.monotonic()
    for k in range(args.trials):
        scenario = SCENARIOS[k % len(SCENARIOS)]
        user_trap = (k // len(SCENARIOS)) % 2 == 1
        with tempfile.TemporaryDirectory(prefix="near-chaos-") as tmp:
            c = run_scenario(Path(tmp), scenario, rng, args.jobs, args.rounds, user_trap)
        print(f"trial {k:3d} {scenario:<19} trap={'yes' if user_trap else 'no ':<3} "
              + " ".join(f"{key}={v}" for key, v in sorted(c.items())), flush=True)
        c.pop("seconds")
        total.update(c)
        by_scenario[scenario].update(c)
    for s, c in by_scenario.items():
        if c:
            print(f"{s:<19} " + " ".join(f"{key}={v}" for key, v in sorted(c.items())))
    broken = bad(total)
    print(f"FIGURE {args.trials} trials, {total['jobs']} jobs in {time.monotonic() - t0:.0f} s: "
          f"exactly once {total['exactly_once']}, re-ran after an interruption {total['rerun_after_interruption']}, "
          f"done without end line {total['done_without_end']}, ran twice uninterrupted "
          f"{total['ran_twice_uninterrupted']}, not done {total['not_done']}"
          f" ({'OK' if broken == 0 else 'FAILED'})")
    return 0 if broken == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
