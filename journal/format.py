"""The journal's bytes, and nothing else: file header, record framing, types, limits.

Grammar (all integers little-endian; see docs/journal-format.md for a worked example)::

    journal := header record* zero*
    header  := magic[8]="KVCJRNL\\0" version:u16 flags:u16 reserved:u32
               base_ts:u64 reserved:u32 header_crc:u32          (32 bytes)
    record  := crc:u32 length:u32 type:u8 scope:u8 ns_len:u8 key_len:u16 ts:u64
               ns[ns_len] key[key_len] value[length - 13 - ns_len - key_len]

`crc` is CRC-32 (zlib) over every byte after itself: `length` through the value, so a
damaged length field fails the check instead of steering the reader. Type 0 is
reserved: preallocated zero bytes read as "end of records". `base_ts` is the rotation
cut this journal starts from (0 for a store's first journal): its leading records are
the live state at `base_ts`, compacted.

Types: PUT and DELETE change one key. BATCH changes many keys of one namespace at one
timestamp, atomically (one record: all or nothing). PREPARE, COMMIT and ABORT are the
shard's side of a two-phase commit: PREPARE holds a transaction's changes without
applying them; COMMIT applies them at its own timestamp; ABORT drops them. The value
of a BATCH or PREPARE is msgpack (see `encode_batch`, `encode_prepare`).
"""

from __future__ import annotations

import mmap
import struct
import zlib
from typing import Any, Final

import msgpack

from kvcluster.keys import MAX_KEY_BYTES, MAX_NAMESPACE_BYTES

__all__ = [
    "BATCH_KEY",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_KEY_BYTES",
    "MAX_NAMESPACE_BYTES",
    "MAX_RECORD_LENGTH",
    "MAX_VALUE_BYTES",
    "RECORD_FIXED",
    "RECORD_HEAD",
    "TYPE_ABORT",
    "TYPE_BATCH",
    "TYPE_COMMIT",
    "TYPE_DELETE",
    "TYPE_PREPARE",
    "TYPE_PUT",
    "VALUE_TYPES",
    "Buffer",
    "Change",
    "HeaderError",
    "JournalHeader",
    "decode_batch",
    "decode_changes",
    "decode_header",
    "decode_prepare",
    "encode_abort",
    "encode_batch",
    "encode_commit",
    "encode_delete",
    "encode_header",
    "encode_prepare",
    "encode_put",
    "frame_batch",
    "frame_prepare",
    "pack_changes",
    "pack_prepare",
    "record_size",
]

Buffer = bytes | bytearray | memoryview | mmap.mmap  # anything a header can be read from

MAGIC: Final = b"KVCJRNL\x00"
FORMAT_VERSION: Final = 2  # 2 added BATCH, PREPARE, COMMIT and ABORT
READABLE_VERSIONS: Final = frozenset({1, 2})

_HEADER = struct.Struct("<8sHHIQI")  # magic, version, flags, reserved, base_ts, reserved
_HEADER_CRC = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size + _HEADER_CRC.size  # 32
# Timestamps are µs in an unsigned 64-bit field; a timestamp from outside (a commit's)
# must stay below half of it, so a clock that observes it can still move on.
MAX_TIMESTAMP: Final = 1 << 63

TYPE_PUT: Final = 1
TYPE_DELETE: Final = 2
TYPE_BATCH: Final = 3
TYPE_PREPARE: Final = 4
TYPE_COMMIT: Final = 5
TYPE_ABORT: Final = 6
RECORD_TYPES: Final = frozenset({TYPE_PUT, TYPE_DELETE, TYPE_BATCH, TYPE_PREPARE, TYPE_COMMIT, TYPE_ABORT})
VALUE_TYPES: Final = frozenset({TYPE_PUT, TYPE_BATCH, TYPE_PREPARE})  # the others have an empty value
BATCH_KEY: Final = b"*"  # the key field of a BATCH record (its keys are in its value)

# crc, length, type, scope, ns_len, key_len, ts
RECORD_HEAD: Final = struct.Struct("<IIBBBHQ")
_BODY_HEAD: Final = struct.Struct("<IBBBHQ")  # the same fields without the crc
_CRC: Final = struct.Struct("<I")
RECORD_FIXED: Final = RECORD_HEAD.size - 8  # bytes of `length` that precede ns: 13
PREFIX_SIZE: Final = 8  # crc + length: the bytes of a record that `length` does not count

MAX_VALUE_BYTES: Final = 256 << 20
MAX_RECORD_LENGTH: Final = RECORD_FIXED + MAX_NAMESPACE_BYTES + MAX_KEY_BYTES + MAX_VALUE_BYTES
MIN_RECORD_LENGTH: Final = RECORD_FIXED + 2  # a namespace and a key of one byte each


class HeaderError(ValueError):
    """The first bytes are not a journal header this version can read."""


class JournalHeader:
    __slots__ = ("base_ts", "version")

    def __init__(self, base_ts: int, version: int = FORMAT_VERSION) -> None:
        self.base_ts = base_ts
        self.version = version

    def __repr__(self) -> str:
        return f"JournalHeader(base_ts={self.base_ts}, version={self.version})"


def encode_header(base_ts: int) -> bytes:
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, 0, base_ts, 0)
    return head + _HEADER_CRC.pack(zlib.crc32(head))


def decode_header(data: Buffer) -> JournalHeader:
    if len(data) < HEADER_SIZE:
        raise HeaderError(f"file is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, _flags, _r1, base_ts, _r2 = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise HeaderError(f"bad magic {bytes(magic)!r}: not a kvcluster journal")
    (crc,) = _HEADER_CRC.unpack_from(data, _HEADER.size)
    if zlib.crc32(data[: _HEADER.size]) != crc:
        raise HeaderError("header checksum mismatch")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, sorted(READABLE_VERSIONS)))
        raise HeaderError(f"journal format version {version}; this kvcluster reads {readable}")
    return JournalHeader(base_ts, version)


def record_size(ns: bytes, key: bytes, value: bytes) -> int:
    """Bytes one record of these fields takes in the file."""
    return RECORD_HEAD.size + len(ns) + len(key) + len(value)


# Bound once: these run for every write, where each global lookup shows.
_pack_body_head = _BODY_HEAD.pack
_pack_crc = _CRC.pack
_crc32 = zlib.crc32
_join = b"".join


def encode_put(ns: bytes, key: bytes, ts: int, scope: int, value: bytes) -> bytes:
    """Frame a PUT. The caller has checked the field sizes against the limits above."""
    n, k = len(ns), len(key)
    body = _join((_pack_body_head(RECORD_FIXED + n + k + len(value), TYPE_PUT, scope, n, k, ts), ns, key, value))
    return _pack_crc(_crc32(body)) + body


def encode_delete(ns: bytes, key: bytes, ts: int, scope: int) -> bytes:
    """Frame a removal: a DELETE record has an empty value."""
    n, k = len(ns), len(key)
    body = _join((_pack_body_head(RECORD_FIXED + n + k, TYPE_DELETE, scope, n, k, ts), ns, key))
    return _pack_crc(_crc32(body)) + body


# A change inside a BATCH or PREPARE: (key, msgpack value) sets the key, (key, None)
# removes it.
Change = tuple[bytes, bytes | None]
_pack_changes = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def pack_changes(changes: list[Change]) -> bytes:
    """The value of a BATCH record: `[[key, value or nil], ...]` (tuples pack as arrays)."""
    packed: bytes = _pack_changes(changes)
    return packed


def frame_batch(ns: bytes, ts: int, value: bytes) -> bytes:
    """Frame a BATCH record whose value `pack_changes` made."""
    return _framed(TYPE_BATCH, ns, BATCH_KEY, ts, value)


def encode_batch(ns: bytes, ts: int, changes: list[Change]) -> bytes:
    """Frame changes to many keys of `ns`, applied together at `ts`."""
    return _framed(TYPE_BATCH, ns, BATCH_KEY, ts, pack_changes(changes))


def pack_prepare(deadline: int, changes: list[Change]) -> bytes:
    """The value of a PREPARE record: `[deadline, [[key, value or nil], ...]]`."""
    packed: bytes = _pack_changes([deadline, changes])
    return packed


def frame_prepare(ns: bytes, txn: bytes, ts: int, value: bytes) -> bytes:
    return _framed(TYPE_PREPARE, ns, txn, ts, value)


def encode_prepare(ns: bytes, txn: bytes, ts: int, deadline: int, changes: list[Change]) -> bytes:
    """Frame a prepared transaction: `changes`, held until its COMMIT or ABORT."""
    return frame_prepare(ns, txn, ts, pack_prepare(deadline, changes))


def encode_commit(ns: bytes, txn: bytes, ts: int) -> bytes:
    return _framed(TYPE_COMMIT, ns, txn, ts, b"")


def encode_abort(ns: bytes, txn: bytes, ts: int) -> bytes:
    return _framed(TYPE_ABORT, ns, txn, ts, b"")


def _framed(rtype: int, ns: bytes, key: bytes, ts: int, value: bytes) -> bytes:
    n, k = len(ns), len(key)
    body = _join((_pack_body_head(RECORD_FIXED + n + k + len(value), rtype, 1, n, k, ts), ns, key, value))
    return _pack_crc(_crc32(body)) + body


def decode_changes(data: Any) -> list[Change]:
    """The changes of a BATCH value (or of a PREPARE's); ValueError if malformed."""
    if not isinstance(data, list):
        raise ValueError("changes are a list")
    changes: list[Change] = []
    for item in data:
        if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is bytes):
            raise ValueError("a change is [key, value or nil]")
        key, value = item
        if not 0 < len(key) <= MAX_KEY_BYTES or not (value is None or (type(value) is bytes and value)):
            raise ValueError("a change's key or value is malformed")
        changes.append((key, value))
    return changes


def decode_batch(value: bytes) -> list[Change]:
    return decode_changes(msgpack.unpackb(value, raw=True, use_list=True, strict_map_key=True))


def decode_prepare(value: bytes) -> tuple[int, list[Change]]:
    """(deadline, changes) of a PREPARE value; ValueError if malformed."""
    data = msgpack.unpackb(value, raw=True, use_list=True, strict_map_key=True)
    if not (isinstance(data, list) and len(data) == 2 and type(data[0]) is int):
        raise ValueError("a prepare is [deadline, changes]")
    return data[0], decode_changes(data[1])
