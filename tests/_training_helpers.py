"""Helpers of the training-core tests: run `near train` as a real subprocess, read event files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEAR = [sys.executable, "-m", "near"]
#: CPU, one thread, small everything: each stage call takes a few seconds
FAST = ["torch_threads=1", "device=cpu"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "1")
    e.setdefault("MKL_NUM_THREADS", "1")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def near_train(stage: str, overrides: list[str], cache_dir: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `near train <stage>` to completion; return the completed process (text output)."""
    e = env()
    e["NEAR_CACHE_DIR"] = cache_dir
    return subprocess.run([*NEAR, "train", stage, *FAST, *overrides], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=REPO)


def near_train_interrupted(stage: str, overrides: list[str], cache_dir: str, marker: str,
                           sig: int = signal.SIGTERM, timeout: float = 120, delay: float = 0.0) -> tuple[int, str]:
    """Start `near train`, send `sig` once `marker` appears in its output; return (exit code, output)."""
    e = env()
    e["NEAR_CACHE_DIR"] = cache_dir
    proc = subprocess.Popen([*NEAR, "train", stage, *FAST, *overrides], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=e, cwd=REPO)
    lines, deadline, sent = [], time.time() + timeout, False
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if not sent and marker in line:
            time.sleep(delay)  # let it get some work done first
            proc.send_signal(sig)
            sent = True
        if time.time() > deadline:
            proc.kill()
            break
    code = proc.wait(timeout=60)
    assert sent, f"marker {marker!r} never appeared:\n{''.join(lines)[-3000:]}"
    return code, "".join(lines)


def scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's summaries: tag -> [(step, value), ...] by step (file order among equal steps)."""
    from tensorboardX.proto import event_pb2

    from near.training.tblog import _read_records, event_files

    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in event_files(os.path.join(run_dir, "summaries")):
        for frame in _read_records(path):
            event = event_pb2.Event()
            event.ParseFromString(frame[12:-4])
            for value in event.summary.value:
                out[value.tag].append((event.step, value.simple_value))
    return {tag: sorted(points, key=lambda p: p[0]) for tag, points in out.items()}


def run_cli(args: list[str], capsys) -> str:
    """Run the `near` command line in-process; return its output (asserting exit status 0)."""
    from near.cli import main

    code = main(args)
    out = capsys.readouterr()
    assert code == 0, f"{' '.join(args)} exited {code}:\n{out.out[-3000:]}\n{out.err[-3000:]}"
    return out.out + out.err

