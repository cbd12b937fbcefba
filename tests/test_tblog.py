"""Event files across restarts: truncation at the checkpoint stamp, and no collision with a new writer."""

from __future__ import annotations

import os
import time

from tensorboardX import SummaryWriter

from near.training import tblog
from _training_helpers import scalars


def _write(summaries: str, steps: range) -> list[str]:
    before = set(tblog.event_files(summaries))
    writer = SummaryWriter(summaries)
    for step in steps:
        writer.add_scalar("loss", float(step), step)
    writer.close()
    return sorted(set(tblog.event_files(summaries)) - before)


def test_truncate_keeps_events_up_to_the_stamp_and_frees_the_writer_name(tmp_path):
    summaries = str(tmp_path / "summaries")
    [first] = _write(summaries, range(3))
    stamp = time.time()
    time.sleep(0.05)
    writer = SummaryWriter(summaries, filename_suffix=".late")  # events after the checkpoint: redone on resume
    writer.add_scalar("loss", 99.0, 3)
    writer.close()

    assert tblog.truncate_after(summaries, stamp) == 2  # the late file: its header and its scalar
    # the original name is exactly what a writer opened in the same second would pick (and truncate)
    assert not os.path.exists(first)
    assert scalars(str(tmp_path)) == {"loss": [(0, 0.0), (1, 1.0), (2, 2.0)]}
    # a resumed writer, even within the same second, adds to the curve instead of erasing it
    _write(summaries, range(3, 5))
    assert sorted(scalars(str(tmp_path))["loss"]) == [(k, float(k)) for k in range(5)]
    # a second resume keeps the set-aside file under its name
    kept = tblog.event_files(summaries)
    assert tblog.truncate_after(summaries, time.time()) == 0
    assert len(tblog.event_files(summaries)) == len(kept)
    assert sorted(scalars(str(tmp_path))["loss"]) == [(k, float(k)) for k in range(5)]


def test_truncate_without_checkpoint_removes_all_and_ignores_leftover_temp_files(tmp_path):
    summaries = str(tmp_path / "summaries")
    _write(summaries, range(2))
    open(os.path.join(summaries, "events.out.tfevents.1.host.kept0.tmp"), "wb").close()
    assert len(tblog.event_files(summaries)) == 1
    tblog.truncate_after(summaries, None)
    assert tblog.event_files(summaries) == []
