"""Reader of tensorboard event files (TFRecord framing + `Event` protobufs), streamed and bounded.

A TFRecord file is a sequence of records: ``uint64 length | uint32 masked_crc32c(length) |
data[length] | uint32 masked_crc32c(data)``. Each ``data`` is a serialized ``tensorboard.Event``.

Only regular files are read (a FIFO, a device or a link to one is a warning, never a hang), in
chunks of a few MB: memory stays bounded by the chunk size or one record, and a record can never
claim more bytes than the file has left. Both checksums of every record are checked with
google-crc32c (native code) as the record is framed; the first record that fails its checksum, is
cut off, or cannot be decoded ends the read with a warning naming the file and the byte offset,
like tensorboard's own reader.

Decoding each record with protobuf in a Python loop is what makes tbparse slow, so the common case
-- an ``Event`` holding one ``simple_value`` scalar, which is what ``SummaryWriter.add_scalar``
(torch, rl-games, tensorboardX) writes -- is decoded with vectorised numpy over all records of a
chunk at once. Every record that does not match that exact byte layout (file_version, tensor-based
scalars of ``tf.summary``, histograms, images, ...) falls back to tensorboard's bundled protobuf
classes, so the fast path changes speed, never results.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from dataclasses import dataclass, field

import google_crc32c
import numpy as np

_MASK_DELTA = 0xA282EAD8
_HEAD = struct.Struct("<QI")
_U32 = struct.Struct("<I")
CHUNK_BYTES = 8 << 20
MAX_TAG_BYTES = 1024  # longer tags are left out (with a warning): no metric name is that long


def masked_crc32c(data: bytes) -> int:
    """Masked CRC-32C of one byte string (the checksum TFRecord stores)."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


@dataclass
class EventFileData:
    """Scalars read from one event file, as parallel arrays (one entry per scalar point)."""

    tags: list[str]
    tag_index: np.ndarray  # int32 index into `tags`
    step: np.ndarray  # int64
    value: np.ndarray  # float64
    wall_time: np.ndarray  # float64
    records: int = 0  # complete records read
    warning: str | None = None  # set when the file ends mid-record or a record is corrupt
    digest: str = ""  # hash of the bytes read: byte-identical copies of one file share it
    extra: dict = field(default_factory=dict)


def _varint(buf: np.ndarray, pos: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one protobuf varint at every `pos`; returns (value, next_pos, ok)."""
    value = np.zeros(len(pos), dtype=np.uint64)
    going = ok.copy()
    nxt = pos.copy()
    limit = len(buf) - 1
    for k in range(10):
        byte = buf[np.minimum(pos + k, limit)].astype(np.uint64)
        value |= np.where(going, (byte & np.uint64(0x7F)) << np.uint64(7 * k), np.uint64(0))
        nxt = np.where(going, pos + k + 1, nxt)
        going &= (byte & np.uint64(0x80)) != 0
        if not going.any():
            break
    ok = ok & ~going  # a varint longer than 10 bytes is malformed
    return value, nxt, ok


def _gather(buf: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """Bytes ``buf[pos[i]:pos[i]+width]`` as an (n, width) array (indices clipped)."""
    idx = np.minimum(pos[:, None] + np.arange(width), len(buf) - 1)
    return buf[idx]


def _fast_scalars(buf: np.ndarray, p: np.ndarray, n: np.ndarray):
    """Vectorised decode of records shaped Event{wall_time, [step], summary{value{tag, simple_value}}}.

    Returns (ok mask, wall_time, step, tag start, tag length, value) for all records; entries where
    ok is False must be decoded by protobuf.
    """
    end = p + n
    limit = len(buf) - 1

    def at(q: np.ndarray) -> np.ndarray:
        return buf[np.minimum(q, limit)]

    ok = (n >= 9) & (at(p) == 0x09)
    wall = _gather(buf, p + 1, 8).copy().view("<f8").reshape(-1)
    q = p + 9
    has_step = at(q) == 0x10
    step_raw, after_step, ok = _varint(buf, q + 1, ok & has_step | ok & ~has_step)
    step = np.where(has_step, step_raw, np.uint64(0)).view(np.int64)
    q = np.where(has_step, after_step, q)
    ok &= at(q) == 0x2A  # field 5 (summary), length-delimited
    summary_len, q, ok = _varint(buf, q + 1, ok)
    ok &= q + summary_len.astype(np.int64) == end
    ok &= at(q) == 0x0A  # Summary.value (repeated; exactly one accepted here)
    value_len, q, ok = _varint(buf, q + 1, ok)
    ok &= q + value_len.astype(np.int64) == end
    ok &= at(q) == 0x0A  # Value.tag
    tag_len, tag_start, ok = _varint(buf, q + 1, ok)
    tag_len = tag_len.astype(np.int64)
    q = tag_start + tag_len
    ok &= at(q) == 0x15  # Value.simple_value (fixed32 float)
    ok &= q + 5 == end
    value = _gather(buf, q + 1, 4).copy().view("<f4").reshape(-1).astype(np.float64)
    return ok, wall, step, tag_start, tag_len, value


def _proto_scalars(payload: bytes):
    """Scalars of one Event decoded with protobuf: list of (tag, step, value, wall_time)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    event = event_pb2.Event.FromString(payload)
    if not event.HasField("summary"):
        return []
    out = []
    for v in event.summary.value:
        kind = v.WhichOneof("value")
        if kind == "simple_value":
            out.append((v.tag, event.step, float(v.simple_value), event.wall_time))
        elif kind == "tensor":
            # tf.summary.scalar (v2) writes a rank-0 tensor tagged with the scalars plugin
            plugin = v.metadata.plugin_data.plugin_name
            if plugin in ("scalars", "") and len(v.tensor.tensor_shape.dim) == 0:
                arr = tensor_util.make_ndarray(v.tensor)
                if arr.dtype.kind in "fiu" and arr.size == 1:
                    out.append((v.tag, event.step, float(arr.reshape(())), event.wall_time))
    return out




def _crc_ok(buf: bytes, start: int, end: int, stored: int) -> bool:
    crc = google_crc32c.value(buf[start:end])
    return ((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF) == stored


def _not_regular(path: str, mode: int) -> str:
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a directory" if stat.S_ISDIR(mode) else "not a regular file")
    return f"{path}: {kind}, not a regular file; not read"


class _Scanner:
    """Frames the records of one open file chunk by chunk; stops at the first bad record."""

    def __init__(self, fd: int, size: int, path: str, verify_crc: bool):
        self.fd, self.size, self.path, self.verify = fd, size, path, verify_crc
        self.offset = 0  # file offset of the first byte not yet framed
        self.warning: str | None = None
        self.done = False
        self.hasher = hashlib.blake2b(digest_size=16)

    def _read(self, want: int) -> bytes:
        parts, got = [], 0
        while got < want:
            part = os.read(self.fd, min(want - got, 1 << 30))
            if not part:
                break
            parts.append(part)
            self.hasher.update(part)
            got += len(part)
        return b"".join(parts)

    def chunks(self):
        """Yields (buf, payload starts, payload lengths, file offset of buf) per chunk of whole records."""
        carry = b""
        while not self.done:
            left = self.size - self.offset - len(carry)
            buf = carry + self._read(min(CHUNK_BYTES, left)) if left > 0 else carry
            starts, pos, n = [], 0, len(buf)
            need = 0
            while pos + 12 <= n:
                length, head_crc = _HEAD.unpack_from(buf, pos)
                at = self.offset + pos
                if self.verify and not _crc_ok(buf, pos, pos + 8, head_crc):
                    self.warning = f"{self.path}: record header at byte {at} fails its CRC; read up to there"
                    break
                end = pos + 16 + length
                if self.offset + end > self.size:
                    self.warning = (f"{self.path}: record at byte {at} declares {length} bytes but the file ends "
                                    f"{self.size - at - 16} bytes later: cut off mid-record; read up to there")
                    break
                if end > n:
                    need = end - pos  # the whole record, read in the next round
                    break
                if self.verify and not _crc_ok(buf, pos + 12, end - 4, _U32.unpack_from(buf, end - 4)[0]):
                    self.warning = f"{self.path}: record at byte {at} fails its data CRC; read up to there"
                    break
                starts.append(pos + 12)
                pos = end
            else:
                if pos < n and self.offset + n >= self.size:
                    self.warning = (f"{self.path}: ends mid-record at byte {self.offset + pos} (incomplete "
                                    "header); read up to there")
            stop = self.warning is not None or (self.offset + n >= self.size and not need)
            if starts:
                st = np.array(starts, dtype=np.int64)
                ends = np.append(st[1:] - 12, pos)
                yield buf, st, ends - st - 4, self.offset
            if stop:
                self.done = True
                break
            carry = buf[pos:]
            self.offset += pos
            if need > len(carry):  # one record bigger than a chunk: read exactly the rest of it
                carry += self._read(need - len(carry))


def _group_tags(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """Distinct tag byte strings and each record's index into them, one (records x length) block per
    distinct tag length, so memory is the tags' own bytes (a very long tag costs only itself)."""
    tags: list[bytes] = []
    index = np.empty(len(starts), dtype=np.int32)
    for length in np.unique(lens):
        sel = np.flatnonzero(lens == length)
        block = np.ascontiguousarray(buf[starts[sel, None] + np.arange(int(length))]) if length else \
            np.zeros((len(sel), 0), np.uint8)
        keys = block.view(f"V{max(int(length), 1)}").ravel() if length else np.zeros(len(sel), "V1")
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        index[sel] = len(tags) + inverse.reshape(-1).astype(np.int32)
        tags += [bytes(block[f]) for f in first]
    return tags, index


def read_event_file(path: str, verify_crc: bool = True) -> EventFileData:
    """All scalar points of one event file; never raises for truncated, corrupt or hostile content
    (only OSError when the file cannot be opened at all)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _empty(_not_regular(path, st.st_mode))
        if st.st_size == 0:  # a writer that died before its first record, or a failed copy: never silent
            return _empty(f"{path}: empty event file (0 bytes); its run has no data from it")
        os.set_blocking(fd, True)
        scanner = _Scanner(fd, st.st_size, path, verify_crc)
        return _decode(scanner, path)
    finally:
        os.close(fd)


def _empty(warning: str | None) -> EventFileData:
    z = np.zeros(0)
    return EventFileData([], np.zeros(0, np.int32), np.zeros(0, np.int64), z, z.copy(), 0, warning)


def _decode(scanner: _Scanner, path: str) -> EventFileData:
    lookup: dict[bytes, int] = {}
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    records, warning = 0, None
    for raw, payload, lengths, base in scanner.chunks():
        buf = np.frombuffer(raw, dtype=np.uint8)
        records += len(payload)
        ok, wall, step, tag_start, tag_len, value = _fast_scalars(buf, payload, lengths)
        wide = ok & (tag_len > MAX_TAG_BYTES)
        if wide.any():
            first = int(np.flatnonzero(wide)[0])
            warning = warning or (f"{path}: {int(wide.sum())} scalar(s) with a tag longer than {MAX_TAG_BYTES} "
                                  f"bytes (the first of {int(tag_len[first])} bytes, record at byte "
                                  f"{base + int(payload[first]) - 12}) left out")
        ok &= ~wide
        tag_index = np.zeros(len(payload), dtype=np.int32)
        if ok.any():
            ok_idx = np.flatnonzero(ok)
            names, local = _group_tags(buf, tag_start[ok_idx], tag_len[ok_idx])
            ids = np.array([lookup.setdefault(t, len(lookup)) for t in names], dtype=np.int32)
            tag_index[ok_idx] = ids[local]
        extra = []  # (record, tag id, step, value, wall) decoded by protobuf
        for i in np.flatnonzero(~ok & ~wide):
            s, n = int(payload[i]), int(lengths[i])
            try:
                rows = _proto_scalars(raw[s : s + n])
            except Exception as err:  # a record protobuf cannot parse: stop there like tensorboard does
                warning = f"{path}: record at byte {base + s - 12} cannot be decoded ({err}); read up to there"
                ok[i:] = False
                extra = [e for e in extra if e[0] < i]
                scanner.done = True
                break
            extra += [(int(i), lookup.setdefault(t.encode(), len(lookup)), st, v, w) for t, st, v, w in rows
                      if len(t.encode()) <= MAX_TAG_BYTES]
        keep = np.flatnonzero(ok)
        rec = keep
        ti, sp, va, wa = tag_index[keep], step[keep], value[keep], wall[keep]
        if extra:
            ex = list(zip(*extra))
            rec = np.concatenate([keep, np.array(ex[0], np.int64)])
            ti = np.concatenate([ti, np.array(ex[1], np.int32)])
            sp = np.concatenate([sp, np.array(ex[2], np.int64)])
            va = np.concatenate([va, np.array(ex[3], np.float64)])
            wa = np.concatenate([wa, np.array(ex[4], np.float64)])
            order = np.argsort(rec, kind="stable")  # back to the order of the records in the file
            ti, sp, va, wa = ti[order], sp[order], va[order], wa[order]
        parts.append((ti, sp, va, wa))
        if scanner.done:
            break
    warning = warning or scanner.warning
    if not parts:
        out = _empty(warning)
    else:
        cat = [np.concatenate([p[k] for p in parts]) for k in range(4)]
        out = EventFileData([t.decode("utf-8", "replace") for t in lookup], *cat, warning=warning)
    out.records, out.digest = records, scanner.hasher.hexdigest()
    return out
