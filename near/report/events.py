"""Fast reader of tensorboard event files (TFRecord framing + `Event` protobufs).

A TFRecord file is a sequence of records: ``uint64 length | uint32 masked_crc32c(length) |
data[length] | uint32 masked_crc32c(data)``. Each ``data`` is a serialized ``tensorboard.Event``.

Decoding each record with protobuf in a Python loop is what makes tbparse slow, so this module
walks the framing in one tight loop and then decodes the common case -- an ``Event`` holding one
``simple_value`` scalar, which is what ``SummaryWriter.add_scalar`` (torch, rl-games, tensorboardX)
writes -- with vectorised numpy over all records at once. Every record that does not match that
exact byte layout (file_version, tensor-based scalars of ``tf.summary``, multi-value summaries,
histograms, images, ...) falls back to tensorboard's bundled protobuf classes, so the fast path
changes speed, never results. A file cut off mid-record is read up to its last complete record and
reported through ``EventFileData.warning``; a record whose CRC does not match stops the read there,
like tensorboard's own reader.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

_CRC_TABLE: np.ndarray | None = None
_MASK_DELTA = 0xA282EAD8
_LEN = struct.Struct("<Q")


def _crc_table() -> np.ndarray:
    """CRC-32C (Castagnoli) lookup table, reflected polynomial 0x82F63B78."""
    global _CRC_TABLE
    if _CRC_TABLE is None:
        table = np.zeros(256, dtype=np.uint32)
        for i in range(256):
            crc = i
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
            table[i] = crc
        _CRC_TABLE = table
    return _CRC_TABLE


_CRC16_TABLE: np.ndarray | None = None


def _crc_table16() -> np.ndarray:
    """Table that advances a reflected CRC-32C by two bytes at once (65,536 entries).

    For x = (crc ^ next two bytes) & 0xFFFF, the new crc is T16[x] ^ (crc >> 16), where
    T16[x] = T[(T[x & 0xFF] ^ (x >> 8)) & 0xFF] ^ (T[x & 0xFF] >> 8): two byte steps folded into one.
    """
    global _CRC16_TABLE
    if _CRC16_TABLE is None:
        t = _crc_table()
        x = np.arange(65536, dtype=np.uint32)
        first = t[x & 0xFF]
        _CRC16_TABLE = t[(first ^ (x >> 8)) & 0xFF] ^ (first >> np.uint32(8))
    return _CRC16_TABLE


def masked_crc32c_many(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Masked CRC-32C of the byte ranges ``buf[starts[i]:starts[i]+lengths[i]]``, vectorised.

    Records of one file come in few distinct lengths, so each length is one (records x bytes)
    matrix processed two byte columns at a time: a handful of numpy operations per byte pair.
    """
    table, table16 = _crc_table(), _crc_table16()
    out = np.empty(len(starts), dtype=np.uint32)
    eight, sixteen, low16 = np.uint32(8), np.uint32(16), np.uint32(0xFFFF)
    for length in np.unique(lengths):
        length = int(length)
        sel = np.flatnonzero(lengths == length)
        mat = buf[starts[sel, None] + np.arange(length)]
        crc = np.full(len(sel), 0xFFFFFFFF, dtype=np.uint32)
        pairs = length // 2
        if pairs:
            words = mat[:, 0 : 2 * pairs : 2].astype(np.uint32) | (mat[:, 1 : 2 * pairs : 2].astype(np.uint32) << eight)
            for k in range(pairs):
                crc = table16[(crc ^ words[:, k]) & low16] ^ (crc >> sixteen)
        if length % 2:
            crc = table[(crc ^ mat[:, -1]) & np.uint32(0xFF)] ^ (crc >> eight)
        out[sel] = crc
    out ^= np.uint32(0xFFFFFFFF)
    return ((out >> np.uint32(15)) | (out << np.uint32(17))) + np.uint32(_MASK_DELTA)


def masked_crc32c(data: bytes) -> int:
    """Masked CRC-32C of one byte string (the checksum TFRecord stores)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    return int(masked_crc32c_many(arr, np.array([0]), np.array([len(arr)]))[0])


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
    extra: dict = field(default_factory=dict)


def _frame(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Offsets and lengths of every complete record's payload; stops at a cut-off record.

    The one sequential part of decoding (each record's length says where the next starts), so it
    is kept to a minimal loop; lengths are recovered from consecutive offsets afterwards.
    """
    starts: list[int] = []
    append = starts.append
    unpack = _LEN.unpack_from
    pos, size = 0, len(raw)
    last = size - 12
    warning = None
    while pos <= last:
        end = pos + unpack(raw, pos)[0] + 16
        if end > size:
            warning = f"{name}: ends mid-record at byte {pos} (record of {end - pos - 16} bytes cut off); read up to there"
            break
        append(pos)
        pos = end
    else:
        if pos < size:
            warning = f"{name}: ends mid-record at byte {pos} (incomplete header); read up to there"
    offsets = np.array(starts, dtype=np.int64)
    lengths = np.diff(offsets, append=np.int64(pos)) - 16 if len(starts) else np.zeros(0, np.int64)
    return offsets, lengths, warning


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


def read_event_file(path: str, verify_crc: bool = True) -> EventFileData:
    """All scalar points of one event file; never raises for truncated or corrupt content."""
    with open(path, "rb") as fh:
        raw = fh.read()
    starts, lengths, warning = _frame(raw, path)
    if not raw:  # a writer that died before its first record, or a failed copy: never silent
        warning = f"{path}: empty event file (0 bytes); its run has no data from it"
    buf = np.frombuffer(raw, dtype=np.uint8)
    if verify_crc and len(starts):
        header_ok = masked_crc32c_many(buf, starts, np.full(len(starts), 8)) == _gather(
            buf, starts + 8, 4
        ).copy().view("<u4").reshape(-1)
        data_ok = masked_crc32c_many(buf, starts + 12, lengths) == _gather(
            buf, starts + 12 + lengths, 4
        ).copy().view("<u4").reshape(-1)
        good = header_ok & data_ok
        if not good.all():
            first_bad = int(np.argmin(good))
            warning = f"{path}: record {first_bad} (byte {int(starts[first_bad])}) fails its CRC; read up to there"
            starts, lengths = starts[:first_bad], lengths[:first_bad]
    payload = starts + 12
    ok, wall, step, tag_start, tag_len, value = _fast_scalars(buf, payload, lengths)

    tags: list[str] = []
    tag_index = np.zeros(len(starts), dtype=np.int32)
    if ok.any():
        ok_idx = np.flatnonzero(ok)
        ts, tl = tag_start[ok_idx], tag_len[ok_idx]
        width = int(tl.max())
        mat = _gather(buf, ts, width)
        mat = np.where(np.arange(width) < tl[:, None], mat, 0).astype(np.uint8)
        # Group identical tags: a wrapping polynomial hash, then an exact byte comparison per group.
        weights = (np.uint64(1099511628211) ** np.arange(width, dtype=np.uint64)).astype(np.uint64)
        h = (mat.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64) ^ tl.astype(np.uint64)
        uniq, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        exact = (mat == mat[first[inverse]]).all(axis=1) & (tl == tl[first[inverse]])
        for j, f in enumerate(first):
            tags.append(bytes(mat[f, : tl[f]]).decode("utf-8", "replace"))
        tag_index[ok_idx] = inverse.astype(np.int32)
        if not exact.all():  # hash collision: decode those few records with protobuf instead
            ok[ok_idx[~exact]] = False

    # Slow path for everything the fast layout does not cover.
    slow = np.flatnonzero(~ok)
    extra_rows, extra_rec = [], []
    for i in slow:
        s, n = int(payload[i]), int(lengths[i])
        try:
            rows = _proto_scalars(raw[s : s + n])
        except Exception as err:  # a record protobuf cannot parse: stop there like tensorboard does
            warning = warning or f"{path}: record {int(i)} cannot be decoded ({err}); read up to there"
            ok[i:] = False
            break
        extra_rows.extend(rows)
        extra_rec.extend([int(i)] * len(rows))
    keep = np.flatnonzero(ok)
    tag_index, step, value, wall = tag_index[keep], step[keep], value[keep], wall[keep]
    if extra_rows:
        lookup = {t: k for k, t in enumerate(tags)}
        idx = []
        for tag, *_ in extra_rows:
            if tag not in lookup:
                lookup[tag] = len(tags)
                tags.append(tag)
            idx.append(lookup[tag])
        tag_index = np.concatenate([tag_index, np.array(idx, dtype=np.int32)])
        step = np.concatenate([step, np.array([r[1] for r in extra_rows], dtype=np.int64)])
        value = np.concatenate([value, np.array([r[2] for r in extra_rows], dtype=np.float64)])
        wall = np.concatenate([wall, np.array([r[3] for r in extra_rows], dtype=np.float64)])
        rec = np.concatenate([keep, np.array(extra_rec, dtype=np.int64)])
        order = np.argsort(rec, kind="stable")  # back to the order of the records in the file
        tag_index, step, value, wall = tag_index[order], step[order], value[order], wall[order]
    return EventFileData(tags, tag_index, step, value, wall, records=len(starts), warning=warning)
