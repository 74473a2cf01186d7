"""Rotation: retire the active journal into an archive, continuing in a compacted one.

`rotate` is one ordered sequence with a named failpoint after each crash-sensitive
step. Whatever step a crash interrupts, the directory opens with every acknowledged
write: until the rename installs the next journal the old one is `journal`, and
after it the next one is, holding the whole live state; the old journal's bytes are
deleted only once its compressed archive is durable (`archive_retired`).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterable

from kvcluster.errors import StorageError
from kvcluster.failpoints import failpoint
from kvcluster.journal.archive import (
    ACTIVE_NAME,
    NEXT_NAME,
    ArchiveScan,
    archive_name,
    compress_journal,
    list_archives,
    list_raw_archives,
    raw_archive_name,
)
from kvcluster.journal.fs import FileSystem
from kvcluster.journal.reader import RecordScan
from kvcluster.journal.writer import JournalWriter, build_journal, storage_error

__all__ = ["archive_retired", "finish_interrupted", "retired_length", "rotate"]


def rotate(
    fs: FileSystem,
    directory: str,
    old: JournalWriter,
    cut: int,
    size: int,
    live_records: Iterable[bytes],
    install: Callable[[JournalWriter], None],
) -> None:
    """Replace `old` with a journal of `size` bytes holding `live_records` from `cut` on.

    `install` is called with the next journal the moment it becomes `journal` on disk;
    from then on it must receive every write. A StorageError raised before `install`
    leaves the store as it was; one raised after means the switch may not be durable.
    """
    journal_path = os.path.join(directory, ACTIVE_NAME)
    next_path = os.path.join(directory, NEXT_NAME)
    raw_path = os.path.join(directory, raw_archive_name(cut))

    try:
        failpoint("rotate.begin")
        old.flush()  # the retiring journal is complete on disk before it becomes history
        failpoint("rotate.old_flushed")
    except OSError as exc:
        raise storage_error(exc, "rotating", old.path) from exc
    nxt = build_journal(fs, next_path, size, cut, live_records)  # written, msynced, fsynced
    try:
        failpoint("rotate.next_written")
        fs.link(journal_path, raw_path)  # the retiring journal under its archive name too
        fs.fsync_dir(directory)
        failpoint("rotate.old_linked")
        fs.rename(next_path, journal_path)  # the switch: one atomic rename
    except BaseException as exc:
        nxt.close()
        with contextlib.suppress(OSError):  # what is left is cleared when the store next opens
            _discard(fs, next_path)
            if os.path.exists(raw_path) and os.path.samefile(raw_path, journal_path):
                _discard(fs, raw_path)  # our link to the journal that stays active
        if isinstance(exc, OSError):
            raise storage_error(exc, "installing the next journal in", directory) from exc
        raise
    nxt.path = journal_path
    install(nxt)
    old.close()
    try:
        fs.fsync_dir(directory)
        failpoint("rotate.next_installed")
    except OSError as exc:
        raise storage_error(exc, "syncing the directory", directory) from exc


def archive_retired(fs: FileSystem, directory: str, cut: int, length: int) -> None:
    """Compress the retired journal `journal.t<cut>` and only then delete it."""
    raw_path = os.path.join(directory, raw_archive_name(cut))
    compress_journal(fs, raw_path, os.path.join(directory, archive_name(cut)), length)
    try:
        fs.unlink(raw_path)
        failpoint("archive.raw_unlinked")
        fs.fsync_dir(directory)
    except OSError as exc:
        raise storage_error(exc, "removing the archived journal", raw_path) from exc


def finish_interrupted(fs: FileSystem, directory: str) -> list[int]:
    """Undo or complete what a crash mid-rotation left, before the store opens.

    Returns the cuts of retired journals still waiting to be archived; the store
    archives them once it is open (`archive_retired`).
    """
    journal_path = os.path.join(directory, ACTIVE_NAME)
    removed = _discard(fs, os.path.join(directory, NEXT_NAME))  # never installed: `journal` is intact
    for entry in os.scandir(directory):
        if entry.name.endswith(".zz.tmp"):
            removed |= _discard(fs, entry.path)  # an archive never renamed into place
    archived = {a.cut for a in list_archives(directory)}
    pending = []
    for raw in list_raw_archives(directory):
        if os.path.exists(journal_path) and os.path.samefile(raw.path, journal_path):
            removed |= _discard(fs, raw.path)  # linked, but the switch never happened
        elif raw.cut in archived and _archive_is_sound(directory, raw.cut):
            removed |= _discard(fs, raw.path)  # its archive was durable; only the unlink was lost
        else:
            pending.append(raw.cut)
    if removed:
        try:
            fs.fsync_dir(directory)
        except OSError as exc:
            raise storage_error(exc, "syncing the directory", directory) from exc
    return pending


def retired_length(path: str) -> int:
    """Bytes worth archiving in a retired journal: up to its last valid record.

    A retired journal was flushed whole before it was retired, so it should hold no
    damage; if it does, all of it is archived and `verify` will report the damage.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return 0
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as data:
            scan = RecordScan(data, path)
            for _ in scan:
                pass
    return scan.position if scan.damage is None else size


def _archive_is_sound(directory: str, cut: int) -> bool:
    scan = ArchiveScan(os.path.join(directory, archive_name(cut)))
    try:
        for _ in scan:
            pass
    except StorageError:
        return False
    return scan.damage is None


def _discard(fs: FileSystem, path: str) -> bool:
    """Remove `path` if it exists; True if it did."""
    try:
        fs.unlink(path)
    except FileNotFoundError:
        return False
    return True
