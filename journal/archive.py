"""Archived journals: names, listing, streamed compression, and a bounded streaming reader.

An archive is the used part of a retired journal, compressed with zlib level 5
(RFC 1950), named `journal.t<cut>.zz` where `cut` is the timestamp of the rotation that
retired it: every record inside has a smaller timestamp, and the next journal starts
from the live state at `cut`. Inflating never holds more than one window (1 MiB plus
the largest record) in memory, whatever the archive claims to hold.
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

from kvcluster.errors import StorageError
from kvcluster.failpoints import failpoint
from kvcluster.journal.format import HEADER_SIZE, HeaderError, JournalHeader, decode_header
from kvcluster.journal.fs import FileSystem
from kvcluster.journal.reader import Damage, Record, RecordScan
from kvcluster.journal.writer import storage_error

__all__ = [
    "ACTIVE_NAME",
    "NEXT_NAME",
    "ArchiveFile",
    "ArchiveScan",
    "archive_name",
    "compress_journal",
    "list_archives",
    "list_raw_archives",
    "raw_archive_name",
]

ACTIVE_NAME: Final = "journal"
NEXT_NAME: Final = "journal.next"  # the next journal while rotation builds it
COMPRESSION_LEVEL: Final = 5
_ARCHIVE_RE: Final = re.compile(r"journal\.t(\d+)\.zz")
_RAW_RE: Final = re.compile(r"journal\.t(\d+)")
_TMP_SUFFIX: Final = ".tmp"
_IO_CHUNK: Final = 1 << 20


def archive_name(cut: int) -> str:
    return f"journal.t{cut}.zz"


def raw_archive_name(cut: int) -> str:
    """The retired journal under its archive name, before it is compressed."""
    return f"journal.t{cut}"


@dataclass(frozen=True)
class ArchiveFile:
    cut: int
    path: str
    size: int


def _list(directory: str, pattern: re.Pattern[str]) -> list[ArchiveFile]:
    found = []
    for entry in os.scandir(directory):
        match = pattern.fullmatch(entry.name)
        if match and entry.is_file(follow_symlinks=False):
            found.append(ArchiveFile(int(match.group(1)), entry.path, entry.stat().st_size))
    return sorted(found, key=lambda a: a.cut)


def list_archives(directory: str) -> list[ArchiveFile]:
    """The compressed archives in `directory`, oldest cut first."""
    return _list(directory, _ARCHIVE_RE)


def list_raw_archives(directory: str) -> list[ArchiveFile]:
    """Retired journals not yet compressed (a rotation was interrupted), oldest first."""
    return _list(directory, _RAW_RE)


def compress_journal(fs: FileSystem, raw_path: str, final_path: str, length: int) -> None:
    """Write `raw_path[:length]` compressed to `final_path`, atomically and durably.

    Streams through a temp file: compress, fsync, rename, fsync the directory. The
    raw journal is not touched; the caller deletes it only after this returns.
    """
    tmp_path = final_path + _TMP_SUFFIX
    directory = os.path.dirname(final_path)
    try:
        if os.path.exists(tmp_path):
            fs.unlink(tmp_path)  # left by an earlier attempt that crashed
        out = fs.create(tmp_path)
    except OSError as exc:
        raise storage_error(exc, "creating", tmp_path) from exc
    try:
        packer = zlib.compressobj(COMPRESSION_LEVEL)
        with open(raw_path, "rb") as raw:
            remaining = length
            while remaining > 0:
                chunk = raw.read(min(_IO_CHUNK, remaining))
                if not chunk:
                    raise StorageError(f"{raw_path} ended {remaining} bytes early", path=raw_path)
                remaining -= len(chunk)
                fs.write_all(out, packer.compress(chunk))
        fs.write_all(out, packer.flush())
        failpoint("archive.written")
        fs.fsync(out)
        failpoint("archive.synced")
    except BaseException as exc:
        os.close(out)
        with contextlib.suppress(OSError):  # a stale temp file is removed by the next attempt
            fs.unlink(tmp_path)
        if isinstance(exc, OSError):
            raise storage_error(exc, "archiving to", tmp_path) from exc
        raise
    os.close(out)
    try:
        fs.rename(tmp_path, final_path)
        fs.fsync_dir(directory)
        failpoint("archive.renamed")
    except OSError as exc:
        raise storage_error(exc, "installing archive", final_path) from exc


class ArchiveScan:
    """Iterate the records of one archive while inflating it in bounded windows.

    After iteration, `header` holds the archived journal's header (None if unreadable)
    and `damage` is None for a sound archive, else the first problem with its offset
    in the inflated journal. A damaged archive yields only the records before damage.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.header: JournalHeader | None = None
        self.damage: Damage | None = None
        self.length = 0  # bytes of journal inflated so far

    def __iter__(self) -> Iterator[Record]:
        try:
            source = open(self.path, "rb")  # noqa: SIM115 - closed in finally below
        except OSError as exc:
            raise storage_error(exc, "opening", self.path) from exc
        try:
            yield from self._records(_Inflater(source, self.path))
        finally:
            source.close()

    def _records(self, stream: _Inflater) -> Iterator[Record]:
        window = b""
        base = 0  # offset of window[0] in the inflated journal
        pos = 0
        while len(window) < HEADER_SIZE and stream.more():
            window += stream.read()
        try:
            self.header = decode_header(window)
        except HeaderError as exc:
            self._fail(stream, 0, f"archive header: {exc}")
            return
        pos = HEADER_SIZE
        while True:
            final = not stream.more()
            scan = RecordScan(window, self.path, pos, len(window), final=final, origin=base)
            yield from scan
            pos = scan.position
            if scan.damage is not None:
                self._fail(stream, base + pos, scan.damage.reason)
                return
            if scan.zero_tail:
                self._expect_zeros(stream, base + len(window))
                return
            if final:
                break
            parts = [window[pos:]]
            have = len(parts[0])
            while stream.more() and have < max(scan.wanted, 1):
                parts.append(stream.read())
                have += len(parts[-1])
            window = b"".join(parts)
            base += pos
            pos = 0
        self.length = base + len(window)
        if stream.error:
            self.damage = Damage(self.path, self.length, 0, stream.error, torn=False)

    def _expect_zeros(self, stream: _Inflater, offset: int) -> None:
        """After a zero header only zeros may follow, to the end of the stream."""
        start = offset
        while stream.more():
            chunk = stream.read()
            if chunk.strip(b"\x00"):
                self._fail(stream, start, "data after zero fill")
                return
            offset += len(chunk)
        self.length = offset
        if stream.error:
            self.damage = Damage(self.path, offset, 0, stream.error, torn=False)

    def _fail(self, stream: _Inflater, offset: int, reason: str) -> None:
        """Record damage at `offset`, counting the inflated bytes it leaves unread."""
        total = stream.produced
        while stream.more():
            stream.read()
            total = stream.produced
        if stream.error and "zlib" not in reason:
            reason = f"{reason}; then {stream.error}"
        self.length = total
        self.damage = Damage(self.path, offset, max(0, total - offset), reason, torn=False)


class _Inflater:
    """zlib-inflate a file in chunks of at most _IO_CHUNK output bytes each."""

    def __init__(self, source: BinaryIO, path: str) -> None:
        self.source = source
        self.path = path
        self.inflater = zlib.decompressobj()
        self.pending = b""  # compressed input not yet consumed
        self.produced = 0
        self.done = False
        self.error: str | None = None

    def more(self) -> bool:
        return not self.done

    def read(self) -> bytes:
        while not self.done:
            if not self.pending:
                self.pending = self.source.read(_IO_CHUNK)
                if not self.pending:
                    self.done = True
                    if not self.inflater.eof:
                        self.error = f"archive truncated: zlib stream ends early after {self.produced} bytes"
                    return b""
            try:
                out = self.inflater.decompress(self.pending, _IO_CHUNK)
            except zlib.error as exc:
                self.done = True
                self.error = f"zlib: {exc} after {self.produced} bytes"
                return b""
            self.pending = self.inflater.unconsumed_tail
            if self.inflater.eof:
                self.done = True
                if self.inflater.unused_data or self.source.read(1):
                    self.error = "bytes after the end of the compressed stream"
            self.produced += len(out)
            if out:
                return out
        return b""
