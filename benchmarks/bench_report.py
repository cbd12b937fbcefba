"""Benchmark of `near report`: 200 runs x 10 tags x 2,000 steps (4 M scalar points).

Prints: plain tbparse SummaryReader over the runs folder (the anchor), a cold report (no cache:
decode every event file, join the job table, write every figure and table), the same read stage
alone, and a warm report with nothing changed; LAST the ratio tbparse / cold report (target >= 10).

The data is generated once into $NEAR_BENCH_DIR (default: a folder in the system temp dir) and
reused by later runs. Event files are real TFRecord files: the Event protobufs are serialized by
tensorboard's bundled protobuf classes and framed with their masked CRC-32C (numpy-vectorised,
since tensorboard's pure-Python CRC would take minutes); one run is written by torch's
SummaryWriter itself. Usage: .venv/bin/python benchmarks/bench_report.py [--runs 200 --tags 10 --steps 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ALGOS = ["NEAR", "AMP", "Track", "PPO"]
MOTIONS = ["circle", "figure8"]


def _write_run(args: tuple) -> None:
    run_dir, run_index, tags, steps, seed = args
    from tensorboard.compat.proto import event_pb2, summary_pb2

    from near.report.events import masked_crc32c_many

    rng = np.random.default_rng(seed)
    payloads = [event_pb2.Event(wall_time=1.7e9, file_version="brain.Event:2").SerializeToString()]
    level = 1.0 + 0.1 * (run_index % len(ALGOS))
    x = np.arange(steps)
    values = level * (1 - np.exp(-x / (steps / 4)))[None, :] * 100 + rng.normal(0, 2, (tags, steps))
    wall = 1.7e9 + np.arange(steps) * 0.5
    names = [f"metrics/tag_{k:02d}" for k in range(tags)]
    for s in range(steps):
        for k in range(tags):
            ev = event_pb2.Event(wall_time=wall[s], step=s * 64, summary=summary_pb2.Summary(
                value=[summary_pb2.Summary.Value(tag=names[k], simple_value=float(values[k, s]))]))
            payloads.append(ev.SerializeToString())
    lengths = np.array([len(p) for p in payloads], dtype=np.int64)
    headers = lengths.astype("<u8").view(np.uint8).reshape(-1, 8)
    flat = np.frombuffer(headers.tobytes(), dtype=np.uint8)
    header_crc = masked_crc32c_many(flat, np.arange(len(payloads)) * 8, np.full(len(payloads), 8))
    blob = b"".join(payloads)
    body = np.frombuffer(blob, dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    data_crc = masked_crc32c_many(body, starts, lengths)
    out = bytearray()
    for i, p in enumerate(payloads):
        out += struct.pack("<QI", int(lengths[i]), int(header_crc[i])) + p + struct.pack("<I", int(data_crc[i]))
    summaries = Path(run_dir) / "summaries"
    summaries.mkdir(parents=True, exist_ok=True)
    (summaries / f"events.out.tfevents.1700000000.bench.{run_index}.0").write_bytes(bytes(out))


def generate(root: Path, runs: int, tags: int, steps: int) -> Path:
    """Create EXP (jobs.db + runs/<job>/summaries/*) once; return EXP."""
    from near.jobtable import JobSpec, JobTable

    exp = root / f"bench_{runs}x{tags}x{steps}"
    if (exp / "READY").is_file():
        return exp
    shutil.rmtree(exp, ignore_errors=True)
    exp.mkdir(parents=True)
    table = JobTable.create(exp / "jobs.db", sweep=exp.name)
    specs = []
    for i in range(runs):
        alg, motion = ALGOS[i % len(ALGOS)], MOTIONS[(i // len(ALGOS)) % len(MOTIONS)]
        seed = i // (len(ALGOS) * len(MOTIONS))
        specs.append(JobSpec(job_id=f"job{i:04d}", stage="rl", command="true", sweep=exp.name,
                             params={"algorithm": alg, "motion": motion, "seed": seed}))
    table.add(specs, axes=["algorithm", "motion", "seed"])
    frame = table.to_frame().set_index("job_id")
    table.close()
    t0 = time.perf_counter()
    work = [(frame.loc[f"job{i:04d}", "run_dir"], i, tags, steps, i) for i in range(1, runs)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_write_run, work, chunksize=4))
    # run 0 through torch's SummaryWriter, the writer rl-games uses
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(Path(frame.loc["job0000", "run_dir"]) / "summaries"))
    for s in range(steps):
        for k in range(tags):
            w.add_scalar(f"metrics/tag_{k:02d}", float(s % 97), s * 64)
    w.close()
    (exp / "READY").write_text("ok\n")
    print(f"generated {runs} runs x {tags} tags x {steps} steps in {time.perf_counter() - t0:.1f}s under {exp}")
    return exp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--tags", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--skip-tbparse", action="store_true", help="only time the report (no ratio)")
    a = ap.parse_args()
    root = Path(os.environ.get("NEAR_BENCH_DIR", Path(tempfile.gettempdir()) / "near_bench_report"))
    exp = generate(root, a.runs, a.tags, a.steps)
    points = a.runs * a.tags * a.steps
    from near.report import logs
    from near.report.pipeline import run_report

    quiet = lambda msg: None  # noqa: E731
    # This machine is shared: the load average says how much CPU the other users took meanwhile.
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")

    shutil.rmtree(exp / ".cache", ignore_errors=True)
    shutil.rmtree(exp / "figures", ignore_errors=True)
    t0 = time.perf_counter()
    rep = run_report(exp, log=quiet)
    cold = time.perf_counter() - t0
    print(f"cold report (read {points:,} points + {len(rep.written)} files written): {cold:.2f}s")

    t0 = time.perf_counter()
    frame, _ = logs.load_scalars(logs.find_event_files([exp / "runs"]), None)
    read = time.perf_counter() - t0
    print(f"read stage alone, no cache ({len(frame):,} points): {read:.2f}s = {len(frame) / read:,.0f} points/s")

    t0 = time.perf_counter()
    rep = run_report(exp, log=quiet)
    warm = time.perf_counter() - t0
    print(f"warm report, nothing changed: {warm:.3f}s (target < 0.5 s)")

    if a.skip_tbparse:
        return
    t0 = time.perf_counter()
    ref = logs.read_tbparse(exp / "runs")
    tb = time.perf_counter() - t0
    print(f"tbparse SummaryReader ({len(ref):,} points): {tb:.2f}s = {len(ref) / tb:,.0f} points/s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"ratio tbparse / cold report: {tb / cold:.1f}x (target >= 10x)")


if __name__ == "__main__":
    sys.exit(main())
