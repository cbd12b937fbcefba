"""Hostile event files are data: each ends in a warning naming the file, quickly and in bounded
memory; a run named like a URL scheme is a relative link on the page."""

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from near.report import page
from near.report.events import masked_crc32c

REPO = Path(__file__).resolve().parents[1]


def _record(data: bytes) -> bytes:
    head = struct.pack("<Q", len(data))
    return head + struct.pack("<I", masked_crc32c(head)) + data + struct.pack("<I", masked_crc32c(data))


def _scalar(tag: str, step: int, value: float) -> bytes:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    return event_pb2.Event(wall_time=1.0 + step, step=step, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])).SerializeToString()


def _hostile(kind: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        os.symlink("/dev/zero", path)
    elif kind == "wide_tag":  # 20k scalars and one 100 KB tag
        recs = [_record(_scalar("loss", s, 0.5)) for s in range(20_000)] + [_record(_scalar("x" * 100_000, 1, 1.0))]
        path.write_bytes(b"".join(recs))
    elif kind == "huge_record":  # a valid frame around 20 MB that is no Event
        path.write_bytes(_record(_scalar("ok", 1, 1.0)) + _record(b"\xff" * (20 << 20)))


@pytest.mark.parametrize("kind", ["fifo", "devzero", "wide_tag", "huge_record"])
def test_hostile_file_ends_in_a_warning_fast_and_small(tmp_path, kind):
    path = tmp_path / "run" / "summaries" / "events.out.tfevents.1.host"
    _hostile(kind, path)
    script = textwrap.dedent(f"""
        import resource, sys, time
        from near.report.events import read_event_file
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        d = read_event_file({str(path)!r})
        took = time.perf_counter() - t0
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        print(repr(d.warning)); print(len(d.step), len(d.tags)); print(took); print(grew)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warning, counts, took, grew = proc.stdout.strip().splitlines()[-4:]
    assert str(path) in warning, warning
    assert float(took) < 5.0 and float(grew) < 200, (took, grew)
    points, tags = map(int, counts.split())
    if kind == "wide_tag":  # the other points are all read
        assert points == 20_000 and tags == 1 and "longer than" in warning
    if kind == "huge_record":
        assert points == 1 and "byte" in warning and "cannot be decoded" in warning


def test_fifo_in_a_report_is_a_warning_and_check_fails(tmp_path):
    from _report_helpers import write_run

    write_run(tmp_path / "exp" / "good", {"loss": ([0, 1, 2], [1.0, 0.5, 0.25])})
    _hostile("fifo", tmp_path / "exp" / "bad" / "summaries" / "events.out.tfevents.2.host")
    proc = subprocess.run([sys.executable, "-m", "near", "report", str(tmp_path / "exp"), "--check", "--no-cache"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "a FIFO, not a regular file" in proc.stderr and "check FAILED" in proc.stdout


def test_scheme_like_run_name_is_a_relative_link(tmp_path):
    run = tmp_path / "javascript:alert(1)_1"
    run.mkdir()
    data = page.PageData("t", [], [], runs=[{"run": run.name, "run_dir": str(run), "stage": "rl"}])
    html = page.render(data, tmp_path / "figures")
    assert "href='../javascript" in html and "href='javascript" not in html
    data.runs[0]["run_dir"] = str(tmp_path / "figures" / "javascript:x")
    html = page.render(data, tmp_path / "figures")
    assert "href='./javascript" in html and "href='javascript" not in html
