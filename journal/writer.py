"""Appends records to one memory-mapped, preallocated journal file, and flushes them.

The whole file is reserved with posix_fallocate before it is mapped, so writing
through the map can never meet a full disk (which would be SIGBUS, not an error).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterable

from kvcluster.errors import StorageError
from kvcluster.failpoints import failpoint
from kvcluster.journal.format import HEADER_SIZE, HeaderError, JournalHeader, decode_header, encode_header
from kvcluster.journal.fs import FileSystem

__all__ = ["JournalWriter", "build_journal", "map_journal", "storage_error"]

PAGE = mmap.PAGESIZE
_ZERO_CHUNK = bytes(1 << 20)


def storage_error(exc: OSError, action: str, path: str, offset: int | None = None) -> StorageError:
    """Wrap an OSError so the caller learns what failed, on which file."""
    return StorageError(f"{action} {path}: {exc.strerror or exc}", path=path, offset=offset)


class JournalWriter:
    """The mapped journal file: append records at `position`, flush what is not yet flushed."""

    def __init__(self, fs: FileSystem, path: str, fd: int, mapped: mmap.mmap, position: int, base_ts: int) -> None:
        self.fs = fs
        self.path = path
        self.fd = fd
        self.mapped = mapped
        # Appends fault in one new page after another, which the kernel's readahead
        # takes for a sequential read and answers with ever larger reads of the file:
        # measured here, that made each msync of a few pages cost 4x more after a few
        # MB. Random advice turns readahead off for the map (replay reads it before).
        mapped.madvise(mmap.MADV_RANDOM)
        self.size = len(mapped)
        self.position = position
        self.flushed = position  # every byte before this offset is known to be on disk
        self.base_ts = base_ts

    @property
    def dirty(self) -> bool:
        return self.position > self.flushed

    def append(self, record: bytes) -> None:
        """Copy a record into the map. The caller has checked that it fits."""
        end = self.position + len(record)
        self.mapped[self.position : end] = record
        self.position = end
        failpoint("journal.appended")

    def flush(self) -> None:
        """msync everything appended since the last flush; raises StorageError on failure."""
        if self.position <= self.flushed:
            return
        start = self.flushed - self.flushed % PAGE
        try:
            self.fs.flush(self.mapped, start, self.position - start)
        except OSError as exc:
            raise storage_error(exc, "flushing", self.path, start) from exc
        self.flushed = self.position
        failpoint("journal.flushed")

    def zero(self, start: int, stop: int) -> None:
        """Overwrite [start, stop) with zeros and flush it: how a damaged tail is cut."""
        for lo in range(start, stop, len(_ZERO_CHUNK)):
            hi = min(stop, lo + len(_ZERO_CHUNK))
            self.mapped[lo:hi] = _ZERO_CHUNK[: hi - lo]
        page_start = start - start % PAGE
        try:
            self.fs.flush(self.mapped, page_start, stop - page_start)
        except OSError as exc:
            raise storage_error(exc, "flushing", self.path, page_start) from exc

    def close(self) -> None:
        """Unmap and close without flushing (callers flush first when they mean to)."""
        if not self.mapped.closed:
            self.mapped.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def build_journal(fs: FileSystem, path: str, size: int, base_ts: int, records: Iterable[bytes]) -> JournalWriter:
    """Create `path` (which must not exist) holding a header and `records`, durably.

    On return the file is allocated, written, flushed and fsynced; the caller renames
    it into place. On failure the partial file is removed and StorageError raised.
    """
    try:
        fd = fs.create(path)
    except OSError as exc:
        raise storage_error(exc, "creating", path) from exc
    writer: JournalWriter | None = None
    try:
        fs.allocate(fd, size)
        writer = JournalWriter(fs, path, fd, fs.map(fd, size), 0, base_ts)
        writer.append(encode_header(base_ts))
        for record in records:
            if writer.position + len(record) > size:
                raise StorageError(f"compacted records do not fit in {size} bytes", path=path)
            writer.append(record)
        writer.flush()
        fs.fsync(fd)
        return writer
    except BaseException as exc:
        if writer is not None:
            writer.close()
        else:
            os.close(fd)
        with contextlib.suppress(OSError):  # else it is removed when the store next opens
            fs.unlink(path)
        if isinstance(exc, OSError):
            raise storage_error(exc, "writing", path) from exc
        raise


def map_journal(fs: FileSystem, path: str, min_size: int) -> tuple[int, mmap.mmap, JournalHeader]:
    """Open and map an existing journal, first allocating it up to `min_size` bytes.

    The header is checked before anything is changed, so a foreign file is refused
    untouched. A journal shorter than `min_size` (cut by a crash of the filesystem,
    or copied short) is extended with zeros, which read as "end of records".
    """
    try:
        fd = fs.open_rw(path)
    except OSError as exc:
        raise storage_error(exc, "opening", path) from exc
    try:
        try:
            header = decode_header(os.pread(fd, HEADER_SIZE, 0))
        except HeaderError as exc:
            raise StorageError(f"{path}: {exc}", path=path, offset=0) from None
        size = os.fstat(fd).st_size
        if size < min_size:
            fs.allocate(fd, min_size)
            size = min_size
        return fd, fs.map(fd, size), header
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise storage_error(exc, "mapping", path) from exc
        raise
