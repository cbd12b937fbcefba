"""Reading event files: fast decoder vs tbparse, cut-off and corrupt files, the cache, the metadata join."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from near.report import logs
from near.report.events import read_event_file
from _report_helpers import write_run


def _frame_of(path) -> pd.DataFrame:
    d = read_event_file(str(path))
    return pd.DataFrame({"tag": [d.tags[i] for i in d.tag_index], "step": d.step, "value": d.value})


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    steps = [0, 1, 5, 300, 70000, 2**33]  # step 0 (omitted by protobuf), multi-byte varints
    f = write_run(root / "run", {
        "rewards/iter": (steps, [0.5, -1.25, 3.0, 1e6, -2.5e-3, 7.0]),
        "metrics/dtw_error": ([0, 10, 20], [9.0, 8.0, 7.5]),
        "a/very/long/tag/name/" + "x" * 150: ([3], [1.0]),  # > 127-byte tag: 2-byte length varints
    })
    return f


def test_fast_reader_agrees_with_tbparse(sample):
    fast = _frame_of(sample).sort_values(["tag", "step"]).reset_index(drop=True)
    ref = logs.read_tbparse(sample.parent)[["tag", "step", "value"]].sort_values(["tag", "step"]).reset_index(drop=True)
    assert len(fast) == 10
    pd.testing.assert_frame_equal(fast, ref, check_dtype=False)
    got = fast[fast.tag == "rewards/iter"]
    assert got.step.tolist() == [0, 1, 5, 300, 70000, 2**33]
    np.testing.assert_allclose(got.value, np.float32([0.5, -1.25, 3.0, 1e6, -2.5e-3, 7.0]))


def test_tensor_scalars_take_the_protobuf_path(tmp_path):
    """tf.summary-style scalars (rank-0 tensors of the scalars plugin) are read too."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    w = EventFileWriter(str(tmp_path))
    for step, v in [(1, 0.25), (2, 0.75)]:
        val = summary_pb2.Summary.Value(tag="loss", tensor=tensor_util.make_tensor_proto(np.float64(v)))
        val.metadata.plugin_data.plugin_name = "scalars"
        w.add_event(event_pb2.Event(step=step, wall_time=1.0 + step, summary=summary_pb2.Summary(value=[val])))
    w.close()
    (f,) = logs.find_event_files([tmp_path])
    df = _frame_of(f)
    assert df.values.tolist() == [["loss", 1, 0.25], ["loss", 2, 0.75]]


def test_cut_off_file_reads_up_to_last_complete_record(sample, tmp_path):
    cut = tmp_path / "run" / "summaries" / sample.name
    cut.parent.mkdir(parents=True)
    data = sample.read_bytes()
    cut.write_bytes(data[:-7])  # the last record loses its tail
    d = read_event_file(str(cut))
    assert d.warning and str(cut) in d.warning and "mid-record" in d.warning
    full = read_event_file(str(sample))
    assert len(d.step) == len(full.step) - 1
    cut.write_bytes(data[:5])  # not even a complete header
    d = read_event_file(str(cut))
    assert len(d.step) == 0 and d.warning


def test_corrupt_record_stops_at_crc_mismatch(sample, tmp_path):
    data = bytearray(sample.read_bytes())
    full = read_event_file(str(sample))
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "events.out.tfevents.bad"
    bad.write_bytes(bytes(data))
    d = read_event_file(str(bad))
    assert d.warning and "CRC" in d.warning
    assert 0 < len(d.step) < len(full.step)
    # values before the damage are intact
    assert d.value.tolist() == full.value[: len(d.value)].tolist()


def test_empty_and_garbage_files_never_raise(tmp_path):
    (tmp_path / "events.out.tfevents.empty").write_bytes(b"")
    (tmp_path / "events.out.tfevents.junk").write_bytes(os.urandom(300))
    frame, rep = logs.load_scalars(logs.find_event_files([tmp_path]), tmp_path / "cache")
    assert len(frame) == 0 and rep.files == 2
    assert any("junk" in w for w in rep.warnings)


def _append_records(dst: Path, src: Path) -> None:
    """Append src's records (minus its file_version record) to dst, as a live writer would."""
    import struct

    raw = src.read_bytes()
    (n,) = struct.unpack_from("<Q", raw, 0)
    with open(dst, "ab") as fh:
        fh.write(raw[12 + n + 4:])


def test_cache_rereads_only_changed_files(tmp_path):
    runs = {k: write_run(tmp_path / "exp" / f"r{k}", {"x": ([0, 1, 2], [k, k + 1.0, k + 2.0])}) for k in range(3)}
    cache = tmp_path / "exp" / ".cache" / "scalars"
    files = logs.find_event_files([tmp_path / "exp"])
    assert len(files) == 3
    f1, r1 = logs.load_scalars(files, cache)
    assert (r1.read, r1.cached, len(f1)) == (3, 0, 9)
    f2, r2 = logs.load_scalars(files, cache)
    assert (r2.read, r2.cached) == (0, 3)
    pd.testing.assert_frame_equal(f1.sort_values(["path", "step"]).reset_index(drop=True),
                                  f2.sort_values(["path", "step"]).reset_index(drop=True), check_categorical=False)
    # append more points to run 1: only that file is decoded again, and its new points appear
    extra = write_run(tmp_path / "extra", {"x": ([3, 4], [50.0, 51.0])})
    _append_records(runs[1], extra)
    f3, r3 = logs.load_scalars(files, cache)
    assert (r3.read, r3.cached, len(f3)) == (1, 2, 11)
    assert sorted(f3[f3.path == str(runs[1])].value.tolist()) == [1.0, 2.0, 3.0, 50.0, 51.0]
    # touching a file (new mtime) re-reads just it
    st = os.stat(runs[2])
    os.utime(runs[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, r4 = logs.load_scalars(files, cache)
    assert (r4.read, r4.cached) == (1, 2)
    # a vanished file leaves the frame
    runs[0].unlink()
    f5, r5 = logs.load_scalars(logs.find_event_files([tmp_path / "exp"]), cache)
    assert r5.read == 0 and str(runs[0]) not in set(f5.path.astype(str))
    assert len(f5) == 8


def test_rewritten_file_of_the_same_size_and_mtime_is_read_again(tmp_path):
    """An event file replaced by another run's of the same length (fixed-size records make that common)
    with its old mtime restored (``cp -p``, ``rsync -t``, ``touch -r``): the cache and the report read
    the new numbers, never the old ones."""
    from near.report.pipeline import Report

    exp = tmp_path / "exp"
    path = write_run(exp / "NEAR_walk_1", {"x": (list(range(10)), [1.0] * 10)})
    other = write_run(tmp_path / "other", {"x": (list(range(10)), [9.0] * 10)})
    out = tmp_path / "out"
    quiet = {"workers": 1, "log": lambda m: None, "pattern": "{algorithm}_{motion}_{seed:d}"}
    Report(exp, None, out, **quiet).run()
    assert pd.read_csv(out / "final.csv")["mean"].tolist() == [1.0]
    st = os.stat(path)
    data = other.read_bytes()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    rep = Report(exp, None, out, **quiet)
    assert rep.run(), "called up to date"
    assert pd.read_csv(out / "final.csv")["mean"].tolist() == [9.0]


def test_parallel_read_matches_serial(tmp_path):
    for k in range(10):
        write_run(tmp_path / f"r{k}", {"x": ([0, 1], [k, 2.0 * k]), "y": ([5], [k])})
    files = logs.find_event_files([tmp_path])
    serial, _ = logs.load_scalars(files, None, workers=1)
    par, _ = logs.load_scalars(files, None, workers=2)
    key = ["path", "tag", "step"]
    pd.testing.assert_frame_equal(serial.sort_values(key).reset_index(drop=True),
                                  par.sort_values(key).reset_index(drop=True), check_categorical=False)


def test_attach_metadata_is_a_pure_join_on_run_dir():
    scalars = pd.DataFrame({
        "path": ["/e/runs/j1/summaries/ev.1", "/e/runs/j1/summaries/sub/ev.2", "/e/runs/j2/summaries/ev.3",
                 "/e/other/summaries/ev.4"],
        "tag": ["x"] * 4, "step": [0, 1, 0, 0], "value": [1.0, 2.0, 3.0, 4.0], "wall_time": [0.0] * 4,
    })
    jobs = pd.DataFrame({"job_id": ["j1", "j2", "j1x"], "stage": ["rl"] * 3, "state": ["done", "running", "done"],
                         "run_dir": ["/e/runs/j1", "/e/runs/j2", "/e/runs/j1x"], "algorithm": ["NEAR", "AMP", "PPO"],
                         "seed": [1, 2, 3], "command": ["c"] * 3})
    out = logs.attach_metadata(scalars, jobs)
    assert out["job_id"].astype(object).tolist()[:3] == ["j1", "j1", "j2"]
    assert out["algorithm"].astype(object).tolist()[:3] == ["NEAR", "NEAR", "AMP"]
    assert out["run"].astype(str).tolist() == ["j1", "j1", "j2", "/e/other"]
    assert pd.isna(out["algorithm"].iloc[3])
    assert "command" not in out.columns  # bulky job columns stay in the job table
    assert out["value"].tolist() == [1.0, 2.0, 3.0, 4.0]
    bare = logs.attach_metadata(scalars, None)
    assert bare["run"].astype(str).tolist() == ["/e/runs/j1", "/e/runs/j1", "/e/runs/j2", "/e/other"]


def test_resumed_run_keeps_the_latest_write_per_step(tmp_path):
    """Two event files in one run (a restart) that both logged steps 2..3: the later write wins."""
    run = tmp_path / "runs" / "j1"
    first = write_run(run, {"x": ([0, 1, 2, 3], [0.0, 1.0, 2.0, 3.0])})
    os.utime(first, (1, 1))
    write_run(run, {"x": ([2, 3, 4], [20.0, 30.0, 40.0])})
    frame, _ = logs.load_scalars(logs.find_event_files([tmp_path]), None)
    jobs = pd.DataFrame({"job_id": ["j1"], "run_dir": [str(run)]})
    out = logs.dedupe_resumed(logs.attach_metadata(frame, jobs)).sort_values("step")
    assert out.step.tolist() == [0, 1, 2, 3, 4]
    assert out.value.tolist() == [0.0, 1.0, 20.0, 30.0, 40.0]


def test_restart_from_an_earlier_checkpoint_supersedes_the_old_attempts_later_steps(tmp_path):
    """Attempt 1 logged steps 0..100 and crashed; attempt 2 resumed from step 50's checkpoint and is at 80:
    the run is 0..40 of attempt 1, then attempt 2 -- attempt 1's 90 and 100 belong to a discarded
    course and must not follow attempt 2's values (nor enter the final score)."""
    run = tmp_path / "runs" / "j1"
    first = write_run(run, {"x": (list(range(0, 101, 10)), [float(s) for s in range(0, 101, 10)]),
                            "other": ([0, 100], [1.0, 2.0])})
    os.utime(first, (1, 1))
    second = write_run(run, {"x": ([50, 60, 70, 80], [-1.0, -2.0, -3.0, -4.0])})
    assert first != second
    frame, _ = logs.load_scalars(logs.find_event_files([tmp_path]), None)
    jobs = pd.DataFrame({"job_id": ["j1"], "run_dir": [str(run)]})
    out = logs.dedupe_resumed(logs.attach_metadata(frame, jobs))
    x = out[out.tag == "x"].sort_values("step")
    assert x.step.tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert x.value.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0, -1.0, -2.0, -3.0, -4.0]
    # a tag the new attempt has not logged yet keeps what the old one logged
    assert out[out.tag == "other"].step.tolist() == [0, 100]


def test_crc_matches_tensorboards_reference_implementation():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    from near.report.events import masked_crc32c

    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 3, 8, 31, 64, 255):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == reference(data), n
