"""Opening a store's directory: finish interrupted work, replay, cut damage, report it.

Replay validates every record. Where valid records stop before zeros, the rest is
cut: overwritten with zeros and flushed, so new writes never land behind damage and
stale bytes can never be read as records later. A torn tail (the mark of a crash
mid-write) is simply cut; any other damage is first copied to a quarantine file
beside the journal, since something after it may be worth a human's look.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from dataclasses import dataclass, field

from kvcluster.errors import StorageError
from kvcluster.journal.archive import ACTIVE_NAME, NEXT_NAME, list_archives, list_raw_archives
from kvcluster.journal.format import TYPE_DELETE, TYPE_PUT
from kvcluster.journal.fs import FileSystem
from kvcluster.journal.reader import Damage, RecordScan
from kvcluster.journal.replay import Entries, Prepared, Replay
from kvcluster.journal.rotation import finish_interrupted
from kvcluster.journal.writer import JournalWriter, build_journal, map_journal, storage_error

__all__ = ["Entries", "Recovered", "recover_directory"]

log = logging.getLogger("kvcluster.journal")
_COPY_CHUNK = 1 << 20


@dataclass
class Recovered:
    writer: JournalWriter
    entries: Entries
    max_ts: int
    pending_archives: list[int]
    prepared: dict[bytes, Prepared] = field(default_factory=dict)  # transactions still in doubt
    damage: list[Damage] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)


def recover_directory(fs: FileSystem, directory: str, buffer_size: int) -> Recovered:
    """Bring `directory` to a consistent state and load its live entries."""
    pending = finish_interrupted(fs, directory)
    journal_path = os.path.join(directory, ACTIVE_NAME)
    if not os.path.exists(journal_path):
        if list_archives(directory) or list_raw_archives(directory):
            raise StorageError(
                f"{journal_path} is missing but archives are present: refusing to start empty. "
                "Restore the journal, or rebuild one with kvcluster.journal.recover_at.",
                path=journal_path,
            )
        return Recovered(_create_first_journal(fs, directory, buffer_size), {}, 0, pending)

    fd, mapped, header = map_journal(fs, journal_path, buffer_size)
    try:
        replay, max_ts, scan = _replay(mapped, journal_path)
    except BaseException:
        mapped.close()
        os.close(fd)
        raise
    writer = JournalWriter(fs, journal_path, fd, mapped, scan.position, header.base_ts)
    recovered = Recovered(writer, replay.entries, max(max_ts, header.base_ts), pending, replay.prepared)
    if scan.damage is not None:
        try:
            _cut(fs, directory, writer, scan.damage, recovered)
        except BaseException:
            writer.close()
            raise
    return recovered


def _replay(mapped: mmap.mmap, path: str) -> tuple[Replay, int, RecordScan]:
    replay = Replay()
    entries = replay.entries
    scan = RecordScan(mapped, path)
    max_ts = 0
    last_ns = b""
    space: dict[bytes, tuple[bytes, int]] = {}
    for rtype, ns, key, ts, value in scan:
        if ns != last_ns:
            last_ns = ns
            space = entries.setdefault(ns, {})
        if rtype == TYPE_PUT:  # the common cases, inline: this loop is the reopen time
            space[key] = (value, ts)
        elif rtype == TYPE_DELETE:
            space.pop(key, None)
        else:
            try:
                replay.apply(rtype, ns, key, ts, value)
            except ValueError as exc:
                raise StorageError(f"{path}: malformed record before byte {scan.position}: {exc}", path=path) from None
        if ts > max_ts:
            max_ts = ts
    replay.tidy()
    return replay, max_ts, scan


def _cut(fs: FileSystem, directory: str, writer: JournalWriter, damage: Damage, recovered: Recovered) -> None:
    """Cut the journal back to its last valid record, keeping a copy of real damage."""
    stop = damage.offset + damage.bytes_dropped
    if not damage.torn and damage.bytes_dropped:
        copy = _quarantine(fs, directory, writer, damage.offset, stop)
        recovered.quarantined.append(copy)
        log.warning("%s; the dropped bytes were saved to %s", damage, copy)
    else:
        log.warning("%s", damage)
    writer.zero(damage.offset, stop)
    recovered.damage.append(damage)


def _quarantine(fs: FileSystem, directory: str, writer: JournalWriter, start: int, stop: int) -> str:
    path = os.path.join(directory, f"journal.damaged.{start}.{time.time_ns() // 1000}")
    try:
        fd = fs.create(path)
        try:
            for lo in range(start, stop, _COPY_CHUNK):
                fs.write_all(fd, writer.mapped[lo : min(stop, lo + _COPY_CHUNK)])
            fs.fsync(fd)
        finally:
            os.close(fd)
        fs.fsync_dir(directory)
    except OSError as exc:
        raise storage_error(exc, "saving damaged bytes to", path) from exc
    return path


def _create_first_journal(fs: FileSystem, directory: str, buffer_size: int) -> JournalWriter:
    next_path = os.path.join(directory, NEXT_NAME)
    journal_path = os.path.join(directory, ACTIVE_NAME)
    writer = build_journal(fs, next_path, buffer_size, 0, ())
    try:
        fs.rename(next_path, journal_path)
        fs.fsync_dir(directory)
    except OSError as exc:
        writer.close()
        raise storage_error(exc, "creating", journal_path) from exc
    writer.path = journal_path
    return writer
