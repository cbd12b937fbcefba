"""A trial's metric from its run's event files, read incrementally at poll time.

Uses the report's event-file decoder (:func:`near.report.events.read_event_file`) and its file
discovery; a file is decoded again only when its ``file_key`` (size, mtime, ctime, inode) changed
since the last poll, so polling many running trials costs a ``stat`` per file when nothing moved.
"""

from __future__ import annotations

import os

import numpy as np

from near.report.events import read_event_file
from near.report.logs import file_key, find_event_files


class TagReader:
    """(steps, values) of one tag in a run folder, cached per event file on its `file_key`."""

    def __init__(self, tag: str):
        self.tag = tag
        self._files: dict[str, tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]] = {}

    def series(self, run_dir: str) -> tuple[np.ndarray, np.ndarray]:
        """Points of the tag in ``run_dir`` sorted by step; a step logged twice (a resumed run)
        keeps its latest value."""
        parts = []
        if os.path.isdir(run_dir):
            for path in find_event_files([run_dir]):
                p = str(path)
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                key = file_key(st)
                hit = self._files.get(p)
                if hit is None or hit[0] != key:
                    hit = self._files[p] = (key, *self._decode(p))
                parts.append(hit[1:])
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0)
        step, value, wall = (np.concatenate(x) for x in zip(*parts))
        order = np.lexsort((wall, step))
        step, value = step[order], value[order]
        last = np.append(step[1:] != step[:-1], True) if len(step) else np.zeros(0, bool)
        return step[last], value[last]

    def _decode(self, path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = read_event_file(path)
        if self.tag not in data.tags:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        sel = data.tag_index == data.tags.index(self.tag)
        return data.step[sel], data.value[sel], data.wall_time[sel]

    def forget(self, run_dir: str) -> None:
        """Drop the cache of a finished run."""
        prefix = os.path.abspath(run_dir) + os.sep
        for p in [p for p in self._files if p.startswith(prefix)]:
            del self._files[p]
