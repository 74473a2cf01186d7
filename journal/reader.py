"""Reads records out of a journal image and reports, never hides, where they stop.

The reader validates each record (length bounds, CRC, type, scope) and yields only
records that pass. When it stops before the end of the image it describes why in a
`Damage`; whether that is fatal is the caller's decision (recovery cuts it, `verify`
prints it, point-in-time recovery refuses a damaged archive).
"""

from __future__ import annotations

import mmap
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from kvcluster.journal.format import (
    HEADER_SIZE,
    MAX_KEY_BYTES,
    MAX_NAMESPACE_BYTES,
    MAX_RECORD_LENGTH,
    MIN_RECORD_LENGTH,
    PREFIX_SIZE,
    RECORD_HEAD,
    RECORD_TYPES,
    TYPE_PUT,
    VALUE_TYPES,
)
from kvcluster.scope import Scope

__all__ = ["Damage", "Image", "Record", "RecordScan", "first_nonzero", "last_nonzero"]

Image = bytes | mmap.mmap  # a journal image: slicing either gives bytes
Record = tuple[int, bytes, bytes, int, bytes]  # type, namespace, key, timestamp, value

_PERMANENT: Final = int(Scope.PERMANENT)  # the only scope ever journaled
_CHUNK: Final = 1 << 20
_ZEROS: Final = bytes(_CHUNK)


@dataclass(frozen=True)
class Damage:
    """Where the valid records of a file end, and what lies after them.

    `torn` means the damage is confined to the last record the file holds (the mark a
    crash leaves mid-write); otherwise data follows the damage, which is corruption.
    """

    path: str
    offset: int
    bytes_dropped: int
    reason: str
    torn: bool

    def __str__(self) -> str:
        kind = "torn tail" if self.torn else "corruption"
        return f"{self.path}: {kind} at byte {self.offset}: {self.reason} ({self.bytes_dropped} bytes dropped)"


def first_nonzero(buf: Image, start: int, stop: int) -> int:
    """Offset of the first non-zero byte in buf[start:stop], or -1 when all are zero."""
    lo = start
    while lo < stop:
        hi = min(stop, lo + _CHUNK)
        chunk = bytes(buf[lo:hi])
        if chunk != _ZEROS[: hi - lo]:
            return hi - len(chunk.lstrip(b"\x00"))
        lo = hi
    return -1


def last_nonzero(buf: Image, start: int, stop: int) -> int:
    """Offset of the last non-zero byte in buf[start:stop], or -1 when all are zero."""
    hi = stop
    while hi > start:
        lo = max(start, hi - _CHUNK)
        chunk = bytes(buf[lo:hi])
        if chunk != _ZEROS[: hi - lo]:
            return lo + len(chunk.rstrip(b"\x00")) - 1
        hi = lo
    return -1


class RecordScan:
    """Iterate the valid records of `buf[start:stop]`.

    `position` is set when iteration ends (the hot loop keeps it in a local): it is
    where valid records end, and `damage` is None when only zero
    bytes follow, else a description of what was found there. With `final=False` the
    image is a window of a longer stream (an archive being inflated): a record cut by
    `stop` sets `needs_more` instead of being damage.
    """

    def __init__(
        self,
        buf: Image,
        path: str,
        start: int = HEADER_SIZE,
        stop: int | None = None,
        *,
        final: bool = True,
        origin: int = 0,
    ) -> None:
        self.buf = buf
        self.path = path
        self.position = start
        self.stop = len(buf) if stop is None else stop
        self.final = final  # False: more bytes may follow `stop` (a streamed archive)
        self.origin = origin  # offset of buf[0] in the whole file, for messages
        self.damage: Damage | None = None
        self.needs_more = False  # not final, and the next record does not fit before `stop`
        self.wanted = 0  # when it needs more: bytes from `position` the next record takes
        self.zero_tail = False  # stopped at a zero header with only zeros up to `stop`

    def __iter__(self) -> Iterator[Record]:
        # The hot loop of every replay: one combined test accepts a sound record; only
        # when it fails does `_stop` work out precisely why (end, more data, damage).
        buf = self.buf
        view = memoryview(buf)
        stop = self.stop
        unpack = RECORD_HEAD.unpack_from
        head_size = RECORD_HEAD.size
        crc32 = zlib.crc32
        value_types, record_types = VALUE_TYPES, RECORD_TYPES
        pos = self.position
        try:
            while pos + head_size <= stop:
                crc, length, rtype, scope, ns_len, key_len, ts = unpack(buf, pos)
                end = pos + PREFIX_SIZE + length
                a = pos + head_size
                b = a + ns_len
                c = b + key_len
                if not (
                    (c < end if rtype == TYPE_PUT else (c == end) != (rtype in value_types) and rtype in record_types)
                    and scope == _PERMANENT
                    and 0 < ns_len <= MAX_NAMESPACE_BYTES
                    and 0 < key_len <= MAX_KEY_BYTES
                    and end <= stop
                    and crc32(view[pos + 4 : end]) == crc
                ):
                    break
                pos = end
                yield rtype, buf[a:b], buf[b:c], ts, buf[c:end]
            self._stop(pos)
        finally:
            self.position = pos
            view.release()

    def _stop(self, pos: int) -> None:
        """The records stop at `pos`: decide whether that is the end, a cut window, or damage."""
        self.position = pos
        buf, stop, head_size = self.buf, self.stop, RECORD_HEAD.size
        if pos + head_size > stop:
            if not self.final:
                self.needs_more, self.wanted = True, head_size
            elif last_nonzero(buf, pos, stop) >= 0:  # fewer zeros than a header: the end
                self._damaged(pos, head_size, "truncated record header")
            return
        crc, length, rtype, scope, _ns_len, _key_len, _ts = RECORD_HEAD.unpack_from(buf, pos)
        end = pos + PREFIX_SIZE + length
        if length == 0 and crc == 0 and rtype == 0:
            self._check_zero_tail(pos)
        elif not MIN_RECORD_LENGTH <= length <= MAX_RECORD_LENGTH:
            self._damaged(pos, head_size, f"bad record length {length}")
        elif end > stop:
            if not self.final:
                self.needs_more, self.wanted = True, end - pos
            else:
                self._damaged(pos, end - pos, "record extends past the end of the file")
        elif zlib.crc32(memoryview(buf)[pos + 4 : end]) != crc:
            self._damaged(pos, end - pos, "checksum mismatch")
        elif rtype not in RECORD_TYPES:
            self._damaged(pos, end - pos, f"unknown record type {rtype}")
        elif scope != _PERMANENT:
            self._damaged(pos, end - pos, f"scope {scope} is never journaled")
        else:
            self._damaged(pos, end - pos, "field lengths do not fit the record")

    def _check_zero_tail(self, pos: int) -> None:
        """A zero header ends the records only if nothing but zeros follows it."""
        self.position = pos
        last = last_nonzero(self.buf, pos, self.stop)
        if last < 0:
            self.zero_tail = True
        else:
            first = first_nonzero(self.buf, pos, self.stop)
            reason = f"zero-filled gap followed by data at byte {self.origin + first}"
            self.damage = Damage(self.path, pos, last + 1 - pos, reason, torn=False)

    def _damaged(self, pos: int, extent: int, reason: str) -> None:
        self.position = pos
        last = last_nonzero(self.buf, pos, self.stop)
        dropped = last + 1 - pos if last >= 0 else 0
        self.damage = Damage(self.path, pos, dropped, reason, torn=last < pos + extent)
