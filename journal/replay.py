"""What a sequence of records means: the one place that applies them to a state.

Opening a store replays its journal; point-in-time recovery replays a store's whole
history up to a moment. Both feed records through `Replay`, which keeps the live
entries and the prepared transactions (PREPARE seen, COMMIT or ABORT not yet). PUT
and DELETE, the common case, are applied by the callers' own loops for speed; every
other type comes here.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvcluster.journal.format import (
    TYPE_ABORT,
    TYPE_BATCH,
    TYPE_COMMIT,
    TYPE_DELETE,
    TYPE_PREPARE,
    TYPE_PUT,
    Change,
    decode_batch,
    decode_prepare,
)

__all__ = ["Entries", "Prepared", "Replay"]

# namespace -> key -> (msgpack value, timestamp); bytes throughout, decoded at the API
Entries = dict[bytes, dict[bytes, tuple[bytes, int]]]


@dataclass
class Prepared:
    """A transaction this store voted yes for: its changes wait for COMMIT or ABORT."""

    ns: bytes
    txn: bytes
    ts: int  # the timestamp it proposed
    deadline: int  # µs since the epoch: after it, an undecided transaction is aborted
    changes: list[Change]


class Replay:
    """Applies records in journal order. With `until`, records past it are skipped (a
    COMMIT past it leaves its transaction unapplied, as it was at that moment)."""

    def __init__(self, entries: Entries | None = None, until: int | None = None) -> None:
        self.entries: Entries = {} if entries is None else entries
        self.prepared: dict[bytes, Prepared] = {}
        self.until = until

    def apply(self, rtype: int, ns: bytes, key: bytes, ts: int, value: bytes) -> None:
        """Apply one record. ValueError if a BATCH or PREPARE value is malformed."""
        if self.until is not None and ts > self.until:
            if rtype == TYPE_PREPARE:  # prepared later than `until`: not yet there
                return
            if rtype == TYPE_COMMIT:  # decided later: at `until` it was only prepared
                self.prepared.pop(key, None)
            return
        if rtype == TYPE_PUT:
            self.entries.setdefault(ns, {})[key] = (value, ts)
        elif rtype == TYPE_DELETE:
            self._remove(ns, key)
        elif rtype == TYPE_BATCH:
            self.change(ns, decode_batch(value), ts)
        elif rtype == TYPE_PREPARE:
            deadline, changes = decode_prepare(value)
            self.prepared[key] = Prepared(ns, key, ts, deadline, changes)
        elif rtype == TYPE_COMMIT:
            prepared = self.prepared.pop(key, None)
            if prepared is not None:
                self.change(prepared.ns, prepared.changes, ts)
        elif rtype == TYPE_ABORT:
            self.prepared.pop(key, None)

    def change(self, ns: bytes, changes: list[Change], ts: int) -> None:
        space = self.entries.setdefault(ns, {})
        for key, value in changes:
            if value is None:
                space.pop(key, None)
            else:
                space[key] = (value, ts)

    def _remove(self, ns: bytes, key: bytes) -> None:
        space = self.entries.get(ns)
        if space is not None:
            space.pop(key, None)

    def tidy(self) -> Entries:
        """Drop namespaces left empty (kept during replay: callers hold their dicts)."""
        for ns in [ns for ns, space in self.entries.items() if not space]:
            del self.entries[ns]
        return self.entries
