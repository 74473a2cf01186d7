"""Changes to many keys at once: atomic batches and the shard's side of two-phase commit.

A batch is one BATCH record: its changes apply together at one timestamp, or — if the
record is torn — not at all. A transaction spread over several stores is PREPAREd in
each (its changes journaled, not applied), then COMMITted (applied, at the timestamp
the transaction chose) or ABORTed. A store reopened with a transaction still prepared
reports it in `prepared`, so its owner can ask how it was decided.

Mixed into `VersionedStore`: these methods use its journal, clock and cache.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from kvcluster.errors import InvalidRequest, StorageError
from kvcluster.journal.format import (
    BATCH_KEY,
    RECORD_HEAD,
    Change,
    encode_abort,
    encode_commit,
    encode_prepare,
    frame_batch,
    frame_prepare,
    pack_changes,
    pack_prepare,
)
from kvcluster.journal.replay import Entries
from kvcluster.journal.replay import Prepared as Recovered
from kvcluster.scope import Scope

if TYPE_CHECKING:
    from kvcluster.journal.clock import Clock
    from kvcluster.journal.writer import JournalWriter

__all__ = ["BatchWrites", "Prepared", "ScopedChange"]

# (key, msgpack value or None to remove, scope of the value)
ScopedChange = tuple[bytes, bytes | None, Scope]


@dataclass
class Prepared:
    """A transaction prepared here, waiting for its decision."""

    ns: bytes
    txn: bytes
    ts: int  # the timestamp this store proposed for it
    deadline: int  # µs since the epoch
    changes: list[ScopedChange]
    journaled: list[Change] = field(default_factory=list)  # what its PREPARE record holds

    @classmethod
    def recovered(cls, found: Recovered) -> Prepared:
        """A transaction read back from the journal (its ephemeral values died with the process)."""
        changes = [(key, value, Scope.PERMANENT) for key, value in found.changes]
        return cls(found.ns, found.txn, found.ts, found.deadline, changes, list(found.changes))


class BatchWrites:
    # Provided by VersionedStore.
    _entries: Entries
    _ephemeral: Entries
    _clock: Clock
    _writer: JournalWriter
    _failure: StorageError | None
    _syncing: bool
    prepared: dict[bytes, Prepared]

    if TYPE_CHECKING:

        def _make_room(self, size: int) -> None: ...
        def _written(self) -> None: ...
        def _read_only(self) -> StorageError: ...

    @property
    def last_timestamp(self) -> int:
        """The largest timestamp this store has issued or observed."""
        return self._clock.last

    def observe(self, ts: int) -> None:
        """Every later write here gets a timestamp above `ts` (a snapshot's cut)."""
        self._clock.observe(ts)

    def permanent_spaces(self, ns: bytes | None = None) -> Iterator[tuple[bytes, Mapping[bytes, tuple[bytes, int]]]]:
        """Every namespace's permanent entries (of `ns`, or of all), as (ns, {key: (packed
        value, ts)}): what a snapshot holds. A prepared transaction is not here until it
        commits. The maps are the live ones: read them only where nothing writes (a fork)."""
        if ns is None:
            yield from self._entries.items()
        elif ns in self._entries:
            yield ns, self._entries[ns]

    def get_many_raw(self, ns: bytes, keys: list[bytes]) -> list[tuple[bytes, int] | None]:
        """`get_raw` of each of `keys`: looked up in one C loop per scope."""
        permanent = self._entries.get(ns)
        found: list[tuple[bytes, int] | None] = list(map(permanent.get, keys)) if permanent else [None] * len(keys)
        ephemeral = self._ephemeral.get(ns)
        if ephemeral and None in found:
            found = [row if row is not None else ephemeral.get(key) for key, row in zip(keys, found, strict=True)]
        return found

    def next_timestamp(self) -> int:
        """A timestamp newer than every write so far and older than every later one:
        the cut a read was made at."""
        return self._clock.next()

    def batch_raw(self, ns: bytes, changes: list[ScopedChange]) -> int:
        """Apply `changes` to keys of `ns` all at once, at one timestamp; returns it.

        The caller has validated keys and values and holds no key twice.
        """
        self._check_writable()
        journaled = self._journaled(ns, changes)
        if journaled:
            value = pack_changes(journaled)
            self._make_room(RECORD_HEAD.size + len(ns) + len(BATCH_KEY) + len(value))
            ts = self._clock.next()
            self._writer.append(frame_batch(ns, ts, value))
        else:
            ts = self._clock.next()  # ephemeral only: nothing to journal
        self._apply(ns, changes, ts)
        if journaled and self._syncing:
            self._written()
        return ts

    def set_many_raw(self, ns: bytes, pairs: list[tuple[bytes, bytes]], scope: Scope) -> int:
        """`batch_raw` of values only, in one scope: the common batch, in fewer passes."""
        if scope is not Scope.PERMANENT or self._ephemeral.get(ns):
            return self.batch_raw(ns, [(key, value, scope) for key, value in pairs])
        self._check_writable()
        value = pack_changes(pairs)  # type: ignore[arg-type]  # (key, bytes) is a Change
        self._make_room(RECORD_HEAD.size + len(ns) + len(BATCH_KEY) + len(value))
        ts = self._clock.next()
        self._writer.append(frame_batch(ns, ts, value))
        entries = self._entries.get(ns)
        if entries is None:
            entries = self._entries[ns] = {}
        entries.update([(key, (value, ts)) for key, value in pairs])
        if self._syncing:
            self._written()
        return ts

    def prepare_raw(self, ns: bytes, txn: bytes, deadline: int, changes: list[ScopedChange]) -> int:
        """Journal a transaction's changes without applying them; returns the proposed timestamp."""
        self._check_writable()
        if txn in self.prepared:
            raise InvalidRequest(f"transaction {txn.hex()} is already prepared here")
        journaled = self._journaled(ns, changes)
        value = pack_prepare(deadline, journaled)
        self._make_room(RECORD_HEAD.size + len(ns) + len(txn) + len(value))
        ts = self._clock.next()
        self._writer.append(frame_prepare(ns, txn, ts, value))
        self.prepared[txn] = Prepared(ns, txn, ts, deadline, changes, journaled)
        if self._syncing:
            self._written()
        return ts

    def commit_raw(self, txn: bytes, ts: int) -> None:
        """Apply a prepared transaction's changes at `ts`, the transaction's timestamp."""
        self._check_writable()
        prepared = self.prepared[txn]
        self._make_room(RECORD_HEAD.size + len(prepared.ns) + len(txn))
        self._writer.append(encode_commit(prepared.ns, txn, ts))
        del self.prepared[txn]
        self._clock.observe(ts)  # later writes here must be newer than the transaction
        self._apply(prepared.ns, prepared.changes, ts)
        if self._syncing:
            self._written()

    def abort_raw(self, txn: bytes) -> None:
        """Drop a prepared transaction."""
        self._check_writable()
        prepared = self.prepared[txn]
        self._make_room(RECORD_HEAD.size + len(prepared.ns) + len(txn))
        self._writer.append(encode_abort(prepared.ns, txn, self._clock.next()))
        del self.prepared[txn]
        if self._syncing:
            self._written()

    def _prepared_records(self) -> Iterator[bytes]:
        """PREPARE records of the transactions still in doubt, for a compacted journal."""
        for prepared in self.prepared.values():
            yield encode_prepare(prepared.ns, prepared.txn, prepared.ts, prepared.deadline, prepared.journaled)

    def _prepared_size(self) -> int:
        return sum(
            RECORD_HEAD.size + len(p.ns) + len(p.txn) + 16 + _packed_size(p.journaled) for p in self.prepared.values()
        )

    def _check_writable(self) -> None:
        if self._failure is not None:
            raise self._read_only()

    def _journaled(self, ns: bytes, changes: list[ScopedChange]) -> list[Change]:
        """What the journal must hold: permanent values, and removals of permanent keys
        (an ephemeral value replacing a permanent one removes it from the journal)."""
        permanent = self._entries.get(ns, {})
        journaled: list[Change] = []
        append, kept = journaled.append, Scope.PERMANENT
        for key, value, scope in changes:
            if value is not None and scope is kept:
                append((key, value))
            elif key in permanent:
                append((key, None))
        return journaled

    def _apply(self, ns: bytes, changes: list[ScopedChange], ts: int) -> None:
        permanent = self._entries.setdefault(ns, {})
        if not self._ephemeral.get(ns) and set(map(_SCOPE_OF, changes)) == {Scope.PERMANENT}:
            values = list(map(_VALUE_OF, changes))
            if None not in values:  # permanent values only, no ephemeral key to drop: in bulk
                stamped = zip(values, itertools.repeat(ts), strict=False)  # (repeat is endless)
                permanent.update(zip(map(_KEY_OF, changes), stamped, strict=True))
                return
        ephemeral = self._ephemeral.setdefault(ns, {})
        for key, value, scope in changes:
            if value is None:
                permanent.pop(key, None)
                ephemeral.pop(key, None)
            elif scope is Scope.PERMANENT:
                permanent[key] = (value, ts)
                ephemeral.pop(key, None)
            else:
                ephemeral[key] = (value, ts)
                permanent.pop(key, None)
        if not permanent:
            del self._entries[ns]
        if not ephemeral:
            del self._ephemeral[ns]


_KEY_OF: Final = operator.itemgetter(0)
_VALUE_OF: Final = operator.itemgetter(1)
_SCOPE_OF: Final = operator.itemgetter(2)


def _packed_size(changes: list[Change]) -> int:
    """An upper bound of the msgpack size of `changes` (framing: ~10 bytes per change)."""
    return 16 + sum(len(key) + (len(value) if value else 0) + 12 for key, value in changes)
