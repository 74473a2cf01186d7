"""Check every journal and archive under a directory, like `redis-check-aof`.

Read-only unless asked to fix; a fix only cuts a torn tail (the mark of a crash
mid-write), never corruption with data behind it, and never while the store is open.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass

from kvcluster.errors import StorageError
from kvcluster.journal.archive import ACTIVE_NAME, ArchiveScan, list_archives, list_raw_archives
from kvcluster.journal.format import HeaderError, decode_header
from kvcluster.journal.fs import FileSystem
from kvcluster.journal.lock import lock_directory
from kvcluster.journal.reader import Damage, RecordScan
from kvcluster.journal.writer import JournalWriter

__all__ = ["FileReport", "fix_torn_tail", "store_directories", "verify_file", "verify_tree"]


@dataclass(frozen=True)
class FileReport:
    path: str
    archived: bool
    records: int
    valid_bytes: int
    damage: Damage | None

    @property
    def ok(self) -> bool:
        return self.damage is None


def store_directories(root: str) -> Iterator[str]:
    """Every directory under `root` (itself included) that holds a journal or archives."""
    for directory, _subdirs, files in sorted(os.walk(root)):
        names = set(files)
        if ACTIVE_NAME in names or any(n.startswith("journal.t") for n in names):
            yield directory


def verify_file(path: str, archived: bool) -> FileReport:
    """Read one journal or archive through, validating every record."""
    if archived:
        scan = ArchiveScan(path)
        count = sum(1 for _ in scan)
        return FileReport(path, True, count, scan.length if scan.damage is None else scan.damage.offset, scan.damage)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return FileReport(path, False, 0, 0, Damage(path, 0, 0, "empty file", torn=False))
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mapped:
            try:
                decode_header(mapped)
            except HeaderError as exc:
                return FileReport(path, False, 0, 0, Damage(path, 0, size, f"header: {exc}", torn=False))
            records = RecordScan(mapped, path)
            count = sum(1 for _ in records)
            return FileReport(path, False, count, records.position, records.damage)


def verify_tree(root: str) -> list[FileReport]:
    """Reports for every journal and archive under `root`, in replay order per store."""
    reports = []
    for directory in store_directories(root):
        for archive in list_raw_archives(directory):
            reports.append(verify_file(archive.path, archived=False))
        for archive in list_archives(directory):
            reports.append(verify_file(archive.path, archived=True))
        journal = os.path.join(directory, ACTIVE_NAME)
        if os.path.exists(journal):
            reports.append(verify_file(journal, archived=False))
    return reports


def fix_torn_tail(report: FileReport, fs: FileSystem | None = None) -> None:
    """Zero the torn tail of a journal. Refuses anything else, and an open store."""
    damage = report.damage
    if damage is None:
        return
    if report.archived or not damage.torn:
        raise StorageError(f"{damage}: not a torn tail of a journal; refusing to cut it", path=report.path)
    fs = fs or FileSystem()
    try:
        lock_fd = lock_directory(os.path.dirname(report.path))
    except StorageError:
        raise StorageError(f"{report.path} belongs to a store that is open; stop it first") from None
    try:
        fd = fs.open_rw(report.path)
        writer = JournalWriter(fs, report.path, fd, fs.map(fd, os.fstat(fd).st_size), damage.offset, 0)
        try:
            writer.zero(damage.offset, damage.offset + damage.bytes_dropped)
        finally:
            writer.close()
    finally:
        os.close(lock_fd)
