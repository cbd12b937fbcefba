"""A tiny resumable job for executor tests: counts to N, checkpointing every step into its run dir.

SIGTERM -> writes its checkpoint at the next step and exits 3 (near's "interrupted, resumable").
Options: --fail-unless FILE (exit 1 unless FILE exists), --needs DIR (an earlier job's run dir that
must hold a finished count), --log FILE (append "<run_dir> start <from>" lines, O_APPEND),
--crash-at K (SIGKILL itself at step K on its first attempt).
"""

import argparse
import os
import signal
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--sleep", type=float, default=0.01)
    p.add_argument("--fail-unless", default=None)
    p.add_argument("--needs", action="append", default=[])
    p.add_argument("--log", default=None)
    p.add_argument("--crash-at", type=int, default=None)
    p.add_argument("--stop-delay", type=float, default=0.0, help="seconds a graceful stop takes")
    p.add_argument("tags", nargs="*", help="ignored (lets specs vary a job by an axis value)")
    a = p.parse_args()
    ckpt = os.path.join(a.run_dir, "ckpt.txt")
    start = int(open(ckpt).read()) if os.path.exists(ckpt) else 0
    if a.log:
        fd = os.open(a.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"{a.run_dir} start {start}\n".encode())
        os.close(fd)
    if start:
        print(f"resumed from {start}", flush=True)
    if a.fail_unless and not os.path.exists(a.fail_unless):
        print(f"failing: {a.fail_unless} does not exist", file=sys.stderr)
        return 1
    for dep in a.needs:
        if not os.path.exists(os.path.join(dep, "done.txt")):
            print(f"missing checkpoint of {dep}", file=sys.stderr)
            return 4
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("flag", True))
    for i in range(start, a.n):
        if stop["flag"]:
            time.sleep(a.stop_delay)  # e.g. writing a big checkpoint
            print(f"interrupted at {i}", flush=True)
            return 3
        time.sleep(a.sleep)
        with open(ckpt + ".tmp", "w") as fh:
            fh.write(str(i + 1))
        os.replace(ckpt + ".tmp", ckpt)
        print(f"step {i + 1}", flush=True)
        if a.crash_at is not None and i + 1 == a.crash_at and start == 0:
            os.kill(os.getpid(), signal.SIGKILL)
    open(os.path.join(a.run_dir, "done.txt"), "w").write(str(a.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
