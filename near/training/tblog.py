"""Tensorboard event files that continue the same curve across restarts.

A trainer flushes its summary writer, then writes a checkpoint stamped with the wall time.
When the run restarts from that checkpoint, every event recorded *after* the stamp (the
iterations that will be redone) is removed from the run's event files, so the continued
curve has no duplicated and no missing steps. Without any checkpoint, the old event files
are removed (the run starts from zero). Files are rewritten atomically; a record cut off
mid-write at the end of a file (a killed writer) is dropped.

Kept files are renamed out of the writers' namespace: tensorboardX names a file
``events.out.tfevents.<unix second>.<host>`` and opens it for writing from scratch, so a
run resumed within the same second as the previous attempt started would otherwise erase
the previous attempt's events.
"""

from __future__ import annotations

import glob
import os
import struct


def _read_records(path: str) -> list[bytes]:
    """The complete TFRecord frames (header, data and CRCs, as bytes) of one event file."""
    with open(path, "rb") as fh:
        blob = fh.read()
    frames, pos = [], 0
    while pos + 12 <= len(blob):
        (length,) = struct.unpack("<Q", blob[pos:pos + 8])
        end = pos + 12 + length + 4
        if end > len(blob):
            break  # truncated tail
        frames.append(blob[pos:end])
        pos = end
    return frames


def _wall_time(frame: bytes) -> float:
    from tensorboardX.proto import event_pb2

    event = event_pb2.Event()
    event.ParseFromString(frame[12:-4])
    return event.wall_time


def event_files(summaries_dir: str) -> list[str]:
    """Event files directly under ``summaries_dir``."""
    return sorted(p for p in glob.glob(os.path.join(summaries_dir, "events.out.tfevents.*")) if not p.endswith(".tmp"))


def truncate_after(summaries_dir: str, wall_time: float | None) -> int:
    """Drop events newer than ``wall_time`` (all events if None); return how many were dropped."""
    dropped = 0
    for path in event_files(summaries_dir):
        if wall_time is None:
            os.remove(path)
            dropped += 1
            continue
        frames = _read_records(path)
        keep = [f for f in frames if _wall_time(f) <= wall_time]
        if not keep:
            os.remove(path)
            dropped += len(frames)
            continue
        dropped += len(frames) - len(keep)
        target = path if _is_set_aside(path) else _set_aside_name(path)
        if len(keep) == len(frames) and os.path.getsize(path) == sum(len(f) for f in frames):
            if target != path:  # intact: only its name changes
                os.replace(path, target)
            continue
        tmp = target + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(b"".join(keep))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        if target != path:
            os.remove(path)
    return dropped


_SET_ASIDE = ".kept"


def _is_set_aside(path: str) -> bool:
    return _SET_ASIDE in os.path.basename(path)


def _set_aside_name(path: str) -> str:
    """``path`` + ``.kept<N>``: a free name that no tensorboardX writer will ever choose."""
    n = 0
    while os.path.exists(f"{path}{_SET_ASIDE}{n}"):
        n += 1
    return f"{path}{_SET_ASIDE}{n}"
