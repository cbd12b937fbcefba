"""A trivial search trial: logs f(x, y) = (x - 1.5)^2 + (y + 0.5)^2 + 3 / (step + 1) at steps
0..STEPS-1 to a tensorboard event file in RUN_DIR (tag ``obj/f``), so a search's optimum is 0 at
(1.5, -0.5) and a bad config is worse at every step (what pruners compare). Writes the TFRecord
framing itself: importing a tensorboard writer costs seconds per job on a loaded 2-core machine.
``--crash-above V`` exits 1 when f > V (a crashing trial); SIGTERM exits 3 (interrupted)."""

import argparse
import os
import signal
import socket
import struct
import sys
import time

from near.report.events import masked_crc32c


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def scalar_event(tag: str, value: float, step: int) -> bytes:
    """Event{wall_time, step, summary{value{tag, simple_value}}} as protobuf bytes."""
    t = tag.encode()
    val = b"\x0a" + _varint(len(t)) + t + b"\x15" + struct.pack("<f", value)
    summary = b"\x0a" + _varint(len(val)) + val
    return b"\x09" + struct.pack("<d", time.time()) + b"\x10" + _varint(step) + b"\x2a" + _varint(len(summary)) + summary


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--x", type=float, required=True)
    ap.add_argument("--y", type=float, required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--crash-above", type=float, default=None)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
    f = (args.x - 1.5) ** 2 + (args.y + 0.5) ** 2
    if args.crash_above is not None and f > args.crash_above:
        print(f"f={f} above {args.crash_above}: crashing", file=sys.stderr)
        return 1
    os.makedirs(args.run_dir, exist_ok=True)
    path = os.path.join(args.run_dir, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}")
    with open(path, "ab") as fh:
        for step in range(args.steps):
            fh.write(_record(scalar_event("obj/f", f + 3.0 / (step + 1), step)))
            fh.flush()
            if args.sleep:
                time.sleep(args.sleep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
