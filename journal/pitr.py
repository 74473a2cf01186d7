"""Point-in-time recovery: the state of a store as it was at any kept moment.

The history of a store is its archives, oldest cut first, then the active journal.
Replaying every record with a timestamp <= T, in that order, last write winning,
gives the state at T. Records of a compacted prefix are not in time order, so the
replay filters each record and never stops at the first one past T. A transaction
counts from its COMMIT's timestamp: at an earlier T it was at most prepared.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kvcluster.errors import StorageError
from kvcluster.journal.archive import ACTIVE_NAME, ArchiveScan, list_archives, list_raw_archives
from kvcluster.journal.format import HeaderError, decode_header
from kvcluster.journal.reader import Record, RecordScan
from kvcluster.journal.replay import Replay
from kvcluster.values import unpack_value

__all__ = ["HistoryFile", "earliest_recoverable", "history", "recover_at", "replay_file"]


@dataclass(frozen=True)
class HistoryFile:
    path: str
    archived: bool  # True for a compressed archive, False for a journal file


def history(directory: str) -> list[HistoryFile]:
    """Every file of the store's history in replay order: archives by cut, then the journal."""
    journal = os.path.join(directory, ACTIVE_NAME)
    files: dict[int, HistoryFile] = {}
    for raw in list_raw_archives(directory):  # retired, compression interrupted by a crash
        if not (os.path.exists(journal) and os.path.samefile(raw.path, journal)):
            files[raw.cut] = HistoryFile(raw.path, archived=False)
    for archive in list_archives(directory):
        files[archive.cut] = HistoryFile(archive.path, archived=True)
    ordered = [files[cut] for cut in sorted(files)]
    if os.path.exists(journal):
        ordered.append(HistoryFile(journal, archived=False))
    return ordered


def replay_file(
    source: HistoryFile, *, allow_torn_tail: bool, on_base: Callable[[int], None] | None = None
) -> Iterator[Record]:
    """Yield the records of one history file; StorageError on any damage it holds.

    `allow_torn_tail` accepts the mark a crash leaves at the end of an active journal
    (opening the store cuts it too); anywhere else damage is an error, never skipped.
    `on_base` is called with the file's header `base_ts` before its first record.
    """
    if source.archived:
        scan = ArchiveScan(source.path)
        based = on_base is None
        for record in scan:
            if not based and scan.header is not None and on_base is not None:
                on_base(scan.header.base_ts)
                based = True
            yield record
        if not based and on_base is not None:
            if scan.header is None:
                raise StorageError(f"{source.path}: unreadable archive header", path=source.path, offset=0)
            on_base(scan.header.base_ts)
        damage = scan.damage
    else:
        with open(source.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise StorageError(f"{source.path} is empty", path=source.path)
            with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mapped:
                try:
                    header = decode_header(mapped)
                except HeaderError as exc:
                    raise StorageError(f"{source.path}: {exc}", path=source.path, offset=0) from None
                if on_base is not None:
                    on_base(header.base_ts)
                records = RecordScan(mapped, source.path)
                yield from records
                damage = records.damage
    if damage is not None and not (allow_torn_tail and damage.torn):
        raise StorageError(str(damage), path=damage.path, offset=damage.offset)


def earliest_recoverable(directory: str) -> int:
    """The earliest timestamp `recover_at` can reach: 0 when the whole history is kept."""
    files = history(directory)
    if not files:
        raise StorageError(f"{directory} holds no journal", path=directory)
    return _base_ts(files[0])


def recover_at(directory: str | os.PathLike[str], ts: int) -> dict[tuple[str, str], tuple[Any, int]]:
    """The store's permanent state at `ts`: every write with a timestamp <= ts, last wins.

    Raises StorageError when `ts` is older than the kept history reaches (saying how
    far back it does) or when a file of the history is damaged.
    """
    directory = os.fspath(directory)
    files = history(directory)
    if not files:
        raise StorageError(f"{directory} holds no journal", path=directory)
    earliest = _base_ts(files[0])
    if ts < earliest:
        raise StorageError(
            f"cannot recover to {ts}: retention kept history back to {earliest} only", timestamp=earliest
        )
    replay = Replay(until=ts)  # filters every record: compacted ones are not in time order
    for source in files:
        is_active = os.path.basename(source.path) == ACTIVE_NAME
        for rtype, ns, key, rts, value in replay_file(source, allow_torn_tail=is_active):
            try:
                replay.apply(rtype, ns, key, rts, value)
            except ValueError as exc:
                raise StorageError(f"{source.path}: malformed record: {exc}", path=source.path) from None
    return {
        (ns.decode(), key.decode()): (unpack_value(value), vts)
        for ns, space in replay.tidy().items()
        for key, (value, vts) in space.items()
    }


def _base_ts(source: HistoryFile) -> int:
    if source.archived:
        scan = ArchiveScan(source.path)
        for _ in scan:
            break
        header = scan.header
        if header is None:
            raise StorageError(f"{source.path}: unreadable archive header", path=source.path, offset=0)
        return header.base_ts
    with open(source.path, "rb") as f:
        try:
            return decode_header(f.read(64)).base_ts
        except HeaderError as exc:
            raise StorageError(f"{source.path}: {exc}", path=source.path, offset=0) from None
