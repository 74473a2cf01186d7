"""`VersionedStore`: one directory's journal plus the in-memory cache it rebuilds.

Every write gets a strictly increasing timestamp and is appended to the journal
before it is visible; reads come from memory. Values are kept as msgpack bytes and
decoded only when read through the str API, so a shard can serve them untouched.
Not thread-safe: one owner (a shard's loop, or one thread) drives a store.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kvcluster.config import DEFAULT_BUFFER_SIZE, DEFAULT_FLUSH_INTERVAL, Durability, Retention
from kvcluster.errors import InvalidRequest, StorageError, ValueTooLarge
from kvcluster.journal import rotation
from kvcluster.journal.archive import list_archives, raw_archive_name
from kvcluster.journal.batches import BatchWrites, Prepared
from kvcluster.journal.clock import Clock
from kvcluster.journal.format import HEADER_SIZE, MAX_VALUE_BYTES, RECORD_HEAD, encode_delete, encode_put, record_size
from kvcluster.journal.fs import FileSystem
from kvcluster.journal.lock import lock_directory
from kvcluster.journal.reader import Damage
from kvcluster.journal.recovery import Entries, recover_directory
from kvcluster.journal.retention import apply_retention
from kvcluster.journal.writer import JournalWriter, storage_error
from kvcluster.keys import encode_key, encode_namespace
from kvcluster.scope import Scope
from kvcluster.values import pack_value, unpack_value

__all__ = ["StoreOptions", "VersionedStore"]

log = logging.getLogger("kvcluster.journal")

_PERMANENT = int(Scope.PERMANENT)
_PERMANENT_SCOPE = Scope.PERMANENT
_HEAD_SIZE = RECORD_HEAD.size
_MIN_BUFFER = 4096


@dataclass(frozen=True)
class StoreOptions:
    buffer_size: int = DEFAULT_BUFFER_SIZE
    high_water_mark: float = 0.8
    durability: Durability = Durability.NONE
    retention: Retention = field(default_factory=Retention)
    flush_interval: float = DEFAULT_FLUSH_INTERVAL

    def __post_init__(self) -> None:
        if not isinstance(self.buffer_size, int) or self.buffer_size < _MIN_BUFFER:
            raise InvalidRequest(f"buffer_size must be an int >= {_MIN_BUFFER}, not {self.buffer_size!r}")
        if not 0.1 <= self.high_water_mark <= 1.0:
            raise InvalidRequest(f"high_water_mark must be in [0.1, 1.0], not {self.high_water_mark!r}")
        if not 0 < self.flush_interval <= 60:
            raise InvalidRequest(f"flush_interval must be in (0, 60] seconds, not {self.flush_interval!r}")


class VersionedStore(BatchWrites):
    """A versioned, crash-resilient key-value store in one directory (see README)."""

    def __init__(self, directory: str, options: StoreOptions, fs: FileSystem, lock_fd: int) -> None:
        """Use `VersionedStore.open`."""
        self.directory = directory
        self.options = options
        self._fs = fs
        self._lock_fd = lock_fd
        recovered = recover_directory(fs, directory, options.buffer_size)
        self._writer: JournalWriter = recovered.writer
        self._entries: Entries = recovered.entries
        self._ephemeral: Entries = {}
        self._clock = Clock(recovered.max_ts)
        self.prepared: dict[bytes, Prepared] = {t: Prepared.recovered(p) for t, p in recovered.prepared.items()}
        self.damage: tuple[Damage, ...] = tuple(recovered.damage)
        self.quarantined: tuple[str, ...] = tuple(recovered.quarantined)
        self._limit = self._limit_for(self._writer.size)
        self._always = options.durability is Durability.ALWAYS
        self._interval = options.durability is Durability.INTERVAL
        self._syncing = self._always or self._interval  # writes must see to flushing
        self._dirty_since: float | None = None  # monotonic time of the oldest unflushed write
        self._group_depth = 0
        self._failure: StorageError | None = None  # set once a flush fails: read-only from then on
        self.archive_error: StorageError | None = None  # last archiving problem; retried later
        self.rotations = 0
        self._closed = False
        self._archive([(cut, None) for cut in recovered.pending_archives])

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        high_water_mark: float = 0.8,
        durability: str | Durability = Durability.NONE,
        retention: Retention | None = None,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        fs: FileSystem | None = None,
    ) -> VersionedStore:
        """Open (creating if needed) the store in `directory`, recovering after any crash.

        Damage found on the way is cut and listed in `store.damage`. Raises
        StorageError if another process has the store open.
        """
        options = StoreOptions(
            buffer_size, high_water_mark, Durability.parse(durability), retention or Retention(), flush_interval
        )
        path = os.fspath(directory)
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, "creating", path) from exc
        lock_fd = lock_directory(path)
        try:
            return cls(path, options, fs or FileSystem(), lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    # -- reads ---------------------------------------------------------------------

    def get(self, ns: str, key: str) -> tuple[Any, int] | None:
        """(value, timestamp) of `key`, or None."""
        found = self.get_raw(encode_namespace(ns), encode_key(key))
        return None if found is None else (unpack_value(found[0]), found[1])

    def get_raw(self, ns: bytes, key: bytes) -> tuple[bytes, int] | None:
        """(msgpack value, timestamp) of `key`, or None: the shard's zero-decode path."""
        space = self._entries.get(ns)
        if space is not None:
            found = space.get(key)
            if found is not None:
                return found
        space = self._ephemeral.get(ns)
        return None if space is None else space.get(key)

    def contains(self, ns: str, key: str) -> bool:
        return self.get_raw(encode_namespace(ns), encode_key(key)) is not None

    def scope_of(self, ns: str, key: str) -> Scope | None:
        return self.scope_of_raw(encode_namespace(ns), encode_key(key))

    def scope_of_raw(self, ns: bytes, key: bytes) -> Scope | None:
        if key in self._entries.get(ns, {}):
            return Scope.PERMANENT
        return Scope.EPHEMERAL if key in self._ephemeral.get(ns, {}) else None

    def items(self, ns: str, scope: Scope | None = None) -> Iterator[tuple[str, tuple[Any, int]]]:
        """(key, (value, timestamp)) for every key of `ns`, from a snapshot taken now."""
        ns_b = encode_namespace(ns)
        snapshot = [(key, self.get_raw(ns_b, key)) for key in self.keys_raw(ns_b, scope)]
        return ((key.decode(), (unpack_value(found[0]), found[1])) for key, found in snapshot if found)

    def keys_raw(self, ns: bytes, scope: Scope | None = None) -> list[bytes]:
        """A snapshot of the keys of `ns` (of one scope, or both)."""
        keys: list[bytes] = []
        if scope in (None, Scope.PERMANENT):
            keys.extend(self._entries.get(ns, ()))
        if scope in (None, Scope.EPHEMERAL):
            keys.extend(self._ephemeral.get(ns, ()))
        return keys

    def namespaces(self) -> list[str]:
        """Namespaces holding at least one key."""
        return sorted({ns.decode() for ns in self._entries} | {ns.decode() for ns in self._ephemeral})

    def count(self, ns: str | None = None) -> int:
        """Keys in `ns`, or in the whole store."""
        if ns is None:
            return sum(map(len, self._entries.values())) + sum(map(len, self._ephemeral.values()))
        return self.count_raw(encode_namespace(ns))

    def count_raw(self, ns: bytes) -> int:
        return len(self._entries.get(ns, ())) + len(self._ephemeral.get(ns, ()))

    # -- writes --------------------------------------------------------------------

    def set(self, ns: str, key: str, value: Any, scope: Scope = Scope.PERMANENT) -> int:
        """Store `value` under `key`; returns the write's timestamp."""
        return self.set_raw(encode_namespace(ns), encode_key(key), pack_value(value), scope)

    def set_raw(self, ns: bytes, key: bytes, value: bytes, scope: Scope = Scope.PERMANENT) -> int:
        """`set` for a validated namespace and key and an already msgpack-encoded value."""
        if self._failure is not None:
            raise self._read_only()
        if not 0 < len(value) <= MAX_VALUE_BYTES:
            if value:
                raise ValueTooLarge(f"value is {len(value)} bytes; the journal takes at most {MAX_VALUE_BYTES}")
            raise InvalidRequest("a value is at least one byte of msgpack")
        if scope is _PERMANENT_SCOPE:  # the hot path, kept flat: every call here costs
            if self._writer.position + _HEAD_SIZE + len(ns) + len(key) + len(value) > self._limit:
                self._rotate(extra=record_size(ns, key, value))
            ts = self._clock.next()
            self._writer.append(encode_put(ns, key, ts, _PERMANENT, value))
            space = self._entries.get(ns)
            if space is None:
                space = self._entries[ns] = {}
            space[key] = (value, ts)
            if self._ephemeral:
                _discard(self._ephemeral, ns, key)
        elif scope is Scope.EPHEMERAL:
            space = self._entries.get(ns)
            if space is not None and key in space:  # the journaled value must not come back
                self._make_room(record_size(ns, key, b""))
                ts = self._clock.next()
                self._writer.append(encode_delete(ns, key, ts, _PERMANENT))
                _discard(self._entries, ns, key)
            else:
                ts = self._clock.next()
            _space(self._ephemeral, ns)[key] = (value, ts)
        else:
            raise InvalidRequest(f"unknown scope {scope!r}")
        if self._syncing:
            self._written()
        return ts

    def delete(self, ns: str, key: str) -> int | None:
        """Remove `key`; returns the removal's timestamp, or None if it did not exist."""
        return self.delete_raw(encode_namespace(ns), encode_key(key))

    def delete_raw(self, ns: bytes, key: bytes) -> int | None:
        if self._failure is not None:
            raise self._read_only()
        space = self._entries.get(ns)
        if space is not None and key in space:
            self._make_room(record_size(ns, key, b""))
            ts = self._clock.next()
            self._writer.append(encode_delete(ns, key, ts, _PERMANENT))
            _discard(self._entries, ns, key)
            if self._syncing:
                self._written()
            return ts
        if _discard(self._ephemeral, ns, key):
            return self._clock.next()
        return None

    def drop_namespace_raw(self, ns: bytes) -> int:
        """Remove every key of `ns` (journaling a removal per permanent key); returns how many."""
        removed = len(self._ephemeral.pop(ns, ()))
        with self.group():
            for key in self.keys_raw(ns, Scope.PERMANENT):
                self.delete_raw(ns, key)
                removed += 1
        return removed

    def spaces_raw(self) -> tuple[Entries, Entries]:
        """The live entries, permanent and ephemeral: {ns: {key: (value, ts)}}. Not
        copies — read them, never change them (a shard's resize compares against them)."""
        return self._entries, self._ephemeral

    def install_raw(self, ns: bytes, rows: list[tuple[bytes, bytes | None, int, Scope]]) -> int:
        """Install entries copied from another store with their own timestamps (a resize
        moving keys here): (key, value or None to remove, ts, scope). Installing the same
        rows again changes nothing. Later writes here get newer timestamps. Returns the
        number of rows that changed something."""
        if self._failure is not None:
            raise self._read_only()
        changed = 0
        for key, value, ts, scope in rows:
            if value is None:
                changed += self.delete_raw(ns, key) is not None
                continue
            if self.get_raw(ns, key) == (value, ts):
                continue  # installed before (a chunk sent again)
            if scope is Scope.EPHEMERAL:
                if key in self._entries.get(ns, {}):
                    self.delete_raw(ns, key)  # the journaled value must not come back
                _space(self._ephemeral, ns)[key] = (value, ts)
            else:
                self._make_room(record_size(ns, key, value))
                self._writer.append(encode_put(ns, key, ts, _PERMANENT, value))
                _space(self._entries, ns)[key] = (value, ts)
                _discard(self._ephemeral, ns, key)
            self._clock.observe(ts)
            changed += 1
        if changed and self._syncing:
            self._written()
        return changed

    @contextmanager
    def group(self) -> Iterator[None]:
        """Share one flush among the writes inside (group commit, for `always`).

        Writes inside return their timestamps at once; under `always` they are durable,
        and may be acknowledged, only when the group exits without raising.
        """
        self._group_depth += 1
        try:
            yield
        finally:
            self._group_depth -= 1
            if self._group_depth == 0 and self._always:
                self.flush()

    @property
    def unflushed(self) -> bool:
        """Writes wait in the journal for a flush."""
        return self._writer.dirty

    @property
    def durable_position(self) -> int:
        """Bytes of the active journal known to be on disk: what survives a power cut."""
        return self._writer.flushed

    # -- durability ----------------------------------------------------------------

    def flush(self) -> None:
        """Flush every write so far to disk. A failure makes the store read-only."""
        if self._failure is not None:
            raise self._read_only()
        try:
            self._writer.flush()
        except StorageError as exc:
            self._failure = exc
            log.error("journal flush failed, refusing further writes: %s", exc)
            raise
        self._dirty_since = None

    def flush_due_in(self, now: float | None = None) -> float | None:
        """Seconds until `tick` must flush (`interval` durability), None if nothing waits."""
        if not self._interval or self._dirty_since is None:
            return None
        now = time.monotonic() if now is None else now
        return max(0.0, self._dirty_since + self.options.flush_interval - now)

    def tick(self, now: float | None = None) -> None:
        """Flush if the oldest unflushed write is `flush_interval` old. The owner's loop calls this."""
        due = self.flush_due_in(now)
        if due is not None and due <= 0 and self._failure is None:
            self.flush()

    # -- rotation ------------------------------------------------------------------

    def rotate(self) -> None:
        """Compact the live state into a new journal and archive the old one."""
        if self._failure is not None:
            raise self._read_only()
        self._rotate(extra=0)

    def _rotate(self, extra: int) -> None:
        live = self._prepared_size() + sum(
            RECORD_HEAD.size + len(ns) + len(key) + len(value)
            for ns, space in self._entries.items()
            for key, (value, _ts) in space.items()
        )
        size = self.options.buffer_size
        while HEADER_SIZE + live + extra > size * self.options.high_water_mark / 2:
            size *= 2  # leave at least as much room for new writes as the live state takes
        self.flush()  # a failure here makes the store read-only, like any failed flush
        old = self._writer
        retired_length = old.position
        cut = self._clock.next()
        try:
            rotation.rotate(self._fs, self.directory, old, cut, size, self._live_records(), self._install)
        except StorageError as exc:
            if self._writer is not old:  # switched, but the switch may not be durable
                self._failure = exc
            raise
        self.rotations += 1
        self._archive([(cut, retired_length)])

    def _live_records(self) -> Iterator[bytes]:
        for ns, space in self._entries.items():
            for key, (value, ts) in space.items():
                yield encode_put(ns, key, ts, _PERMANENT, value)
        yield from self._prepared_records()  # transactions in doubt survive rotation

    def _install(self, writer: JournalWriter) -> None:
        self._writer = writer
        self._limit = self._limit_for(writer.size)

    def _archive(self, retired: list[tuple[int, int | None]]) -> None:
        """Archive retired journals (cut, used length if known), then apply retention.

        A failure here loses nothing (the retired journal stays until its archive is
        durable); it is kept in `archive_error` and retried when the store reopens.
        """
        try:
            for cut, known_length in retired:
                raw_path = os.path.join(self.directory, raw_archive_name(cut))
                length = rotation.retired_length(raw_path) if known_length is None else known_length
                rotation.archive_retired(self._fs, self.directory, cut, length)
            apply_retention(self._fs, self.directory, self.options.retention, self._clock.last)
            self.archive_error = None
        except StorageError as exc:
            self.archive_error = exc
            log.warning("archiving failed, will retry when the store reopens: %s", exc)

    # -- lifecycle -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        archives = list_archives(self.directory)
        return {
            "keys": self.count(),
            "permanent_keys": sum(map(len, self._entries.values())),
            "journal_bytes": self._writer.position,
            "journal_size": self._writer.size,
            "base_ts": self._writer.base_ts,
            "last_ts": self._clock.last,
            "archives": len(archives),
            "archive_bytes": sum(a.size for a in archives),
            "rotations": self.rotations,
            "durability": self.options.durability.value,
            "read_only": self._failure is not None,
        }

    def close_inherited_lock(self) -> None:
        """In a child forked from the owner: drop its copy of the directory lock, so the
        lock dies with the owner (the child only reads the entries it inherited)."""
        os.close(self._lock_fd)

    def close(self) -> None:
        """Flush (unless a flush already failed), unmap, and release the directory."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._failure is None:
                self._writer.flush()
        finally:
            self._writer.close()
            os.close(self._lock_fd)

    def __enter__(self) -> VersionedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------

    def _limit_for(self, size: int) -> int:
        return max(HEADER_SIZE, int(size * self.options.high_water_mark))

    def _make_room(self, size: int) -> None:
        """Rotate first if a record of `size` bytes would pass the high-water mark.

        Called before the record's timestamp is taken, so every record after a
        journal's compacted prefix is newer than the journal's cut.
        """
        if self._writer.position + size > self._limit:
            self._rotate(extra=size)

    def _written(self) -> None:
        """Apply the durability mode after a write reached the journal."""
        if self._always:
            if self._group_depth == 0:
                self.flush()
        elif self._interval:
            now = time.monotonic()
            if self._dirty_since is None:
                self._dirty_since = now
            elif now - self._dirty_since >= self.options.flush_interval:
                self.flush()

    def _read_only(self) -> StorageError:
        failure = self._failure
        return StorageError(
            f"store is read-only after a failed flush ({failure}); reopen it to recover",
            path=failure.path if failure else None,
        )


def _space(entries: Entries, ns: bytes) -> dict[bytes, tuple[bytes, int]]:
    space = entries.get(ns)
    if space is None:
        space = entries[ns] = {}
    return space


def _discard(entries: Entries, ns: bytes, key: bytes) -> bool:
    space = entries.get(ns)
    if space is None or key not in space:
        return False
    del space[key]
    if not space:
        del entries[ns]
    return True
