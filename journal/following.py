"""Replaying a store's kept history up to a moment while its owner may still be writing.

`recover_at` reads a store at rest. A shard of a running cluster keeps appending to
its journal, rotates it, compresses and deletes archives meanwhile: a file listed a
moment ago can be gone, and the journal read can be newer than the archives listed
before it. So each attempt checks that the files it read form one unbroken chain —
every file starts (its header's `base_ts`) where the file before it was cut (its
name) — and starts again when a file vanished or the chain broke. Damage that is
still there after a few attempts is reported. Reading never takes the store's lock
and never writes.

Transactions: a PREPARE whose COMMIT or ABORT the history holds is settled by it (a
COMMIT past `until` leaves it unapplied, as it was then). The others are returned in
`in_doubt`: only the coordinator's decision log can say how they ended.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from kvcluster.errors import StorageError
from kvcluster.journal.archive import ACTIVE_NAME
from kvcluster.journal.format import TYPE_ABORT, TYPE_COMMIT, TYPE_DELETE, TYPE_PUT
from kvcluster.journal.pitr import HistoryFile, history, replay_file
from kvcluster.journal.reader import Record
from kvcluster.journal.replay import Prepared, Replay

__all__ = ["REPLAY_ATTEMPTS", "StoreHistory", "replay_history"]

REPLAY_ATTEMPTS: Final = 5  # reads in a row that get no further before giving up
MAX_ROUNDS: Final = 1000  # reads in all: rotations outpacing the reader must not hold it forever
_CUT_RE: Final = re.compile(r"journal\.t(\d+)(?:\.zz)?")


@dataclass
class StoreHistory:
    """A store's state at `until`, replayed from its kept history."""

    replay: Replay  # entries at `until` (bytes, values still msgpack) and prepared transactions
    earliest: int  # the earliest moment the kept history reaches: base_ts of its oldest file
    newest: int  # the largest timestamp of any record read, past `until` too
    in_doubt: dict[bytes, Prepared] = field(default_factory=dict)  # prepared at `until`, no outcome on record


class _Moved(Exception):
    """The history changed while it was read (or a live journal was caught mid-write).
    `resumable`: nothing of the file concerned was applied, so reading can go on from
    the last file read whole; else it starts again. `error` is what reading reported."""

    def __init__(self, reason: str, *, resumable: bool, error: StorageError | None = None) -> None:
        super().__init__(reason)
        self.resumable = resumable
        self.error = error


def replay_history(directory: str | os.PathLike[str], until: int | None = None) -> StoreHistory:
    """The state of the store in `directory` at `until` (None: everything it holds).

    Raises StorageError when the directory holds no journal, when the history is
    damaged, or when it kept changing under the reader `REPLAY_ATTEMPTS` times in a
    row without the reader getting further.
    """
    path = os.fspath(directory)
    reader = _Reader(path, until)
    moved = _Moved("not read", resumable=False)
    stalled = 0
    for _ in range(MAX_ROUNDS):
        files_read = reader.files_read
        try:
            return reader.run()
        except _Moved as exc:
            moved = exc
            progressed = exc.resumable and reader.files_read > files_read
            stalled = 0 if progressed else stalled + 1
            if stalled >= REPLAY_ATTEMPTS:
                break
            if not exc.resumable:
                reader = _Reader(path, until)
    if moved.error is not None:
        raise moved.error  # the same damage every time: it is real
    raise StorageError(f"{path}: its history kept changing while read ({moved}); try again", path=path)


class _Reader:
    """One replay of a history, file after file. Run again after a resumable `_Moved`,
    it goes on after the last file it read whole: rotation only adds files after it."""

    def __init__(self, directory: str, until: int | None) -> None:
        self.directory = directory
        self.replay = Replay(until=until)
        self.limit = (1 << 64) if until is None else until
        self.settled_later: set[bytes] = set()  # transactions whose ABORT comes after `until`
        self.newest = 0
        self.earliest: int | None = None
        self.cut: int | None = None  # the cut of the last file read whole
        self.files_read = 0

    def run(self) -> StoreHistory:
        try:
            files = history(self.directory)
        except FileNotFoundError as exc:  # listed, then archived or expired before its stat
            raise _Moved(f"{exc.filename} vanished", resumable=True) from None
        if not files:
            raise StorageError(f"{self.directory} holds no journal", path=self.directory)
        done = self.cut
        if done is not None:
            files = [f for f in files if (cut := _cut_of(f)) is None or cut > done]
        for source in files:
            self._read(source)
            self.cut = _cut_of(source)  # None only after the active journal, the last file
            self.files_read += 1
        self._check_start()
        replay = self.replay
        replay.tidy()
        in_doubt = {txn: p for txn, p in replay.prepared.items() if txn not in self.settled_later}
        return StoreHistory(replay, self.earliest or 0, self.newest, in_doubt)

    def _check_start(self) -> None:
        """A rotation between the listing and the reading renames the journal into an
        archive after the listing missed it: the reader then starts at the new journal,
        whose base is that rotation's cut, and would report history as starting there.
        Files only ever leave the start of a history (retention), so a file older than
        the first one read, listed now, means the listing raced: read it all again."""
        first = self.earliest or 0
        if not first:
            return
        try:
            now = history(self.directory)
        except FileNotFoundError:
            raise _Moved("the history changed while listed", resumable=False) from None
        if any((cut := _cut_of(f)) is not None and cut <= first for f in now):
            raise _Moved("an older file appeared while the history was read", resumable=False)

    def _read(self, source: HistoryFile) -> None:
        replay, limit, entries = self.replay, self.limit, self.replay.entries
        records = _Records(source, None if self.earliest is None else self.cut)
        applied = False
        newest = self.newest
        try:
            for rtype, ns, key, ts, value in records:
                applied = True
                if ts > newest:
                    newest = ts
                if rtype == TYPE_PUT:  # the common cases inline, as in recovery
                    if ts <= limit:
                        space = entries.get(ns)
                        if space is None:
                            space = entries[ns] = {}
                        space[key] = (value, ts)
                elif rtype == TYPE_DELETE:
                    if ts <= limit:
                        space = entries.get(ns)
                        if space is not None:
                            space.pop(key, None)
                else:
                    if rtype == TYPE_ABORT and ts > limit:
                        self.settled_later.add(key)
                    elif rtype == TYPE_COMMIT:
                        self.settled_later.discard(key)
                    try:
                        replay.apply(rtype, ns, key, ts, value)
                    except ValueError as exc:
                        raise StorageError(f"{source.path}: malformed record: {exc}", path=source.path) from None
        except FileNotFoundError as exc:
            raise _Moved(f"{exc.filename or source.path} vanished", resumable=not applied) from None
        except StorageError as exc:
            if not os.path.exists(source.path):
                raise _Moved(f"{source.path} vanished", resumable=not applied) from None
            if os.path.basename(source.path) == ACTIVE_NAME:  # written to meanwhile?
                raise _Moved(f"{source.path} changed while read", resumable=False, error=exc) from None
            raise
        finally:
            self.newest = max(self.newest, newest)
        if self.earliest is None:
            self.earliest = records.base_ts


class _Records:
    """The records of one history file; `base_ts` is its header's.

    With `expected_base`, a file that does not start there raises a resumable `_Moved`
    before any record is yielded. Raises StorageError on damage, except the torn tail a
    crash (or a write in progress) leaves at the end of the active journal.
    """

    def __init__(self, source: HistoryFile, expected_base: int | None) -> None:
        self.source = source
        self.expected_base = expected_base
        self.base_ts = 0

    def _starts(self, base_ts: int) -> None:
        self.base_ts = base_ts
        if self.expected_base is not None and base_ts != self.expected_base:
            raise _Moved(
                f"{self.source.path} starts at {base_ts}, but the file before it was cut at {self.expected_base}",
                resumable=True,
            )

    def __iter__(self) -> Iterator[Record]:
        active = os.path.basename(self.source.path) == ACTIVE_NAME
        yield from replay_file(self.source, allow_torn_tail=active, on_base=self._starts)


def _cut_of(source: HistoryFile) -> int | None:
    """The cut in an archive's name (None for the active journal, the last file)."""
    match = _CUT_RE.fullmatch(os.path.basename(source.path))
    return int(match.group(1)) if match else None
