"""Single-key operations, scans and key counting of the Redis Cluster backend, as plans.

Reads are plain GET/GETRANGE, decoded here; writes run the scripts of scripts.py. Every
operation first checks its namespace against the client's registry cache (no round
trip while it is fresh): NamespaceNotFound once it is deleted, ValueTooLarge against
its `max_value_bytes`, and whether its keys are counted (`max_keys` > 0). A key locked
by a cross-slot batch is resolved as locks.py says: a read takes the old record of an
undecided batch, a write waits for the decision (at most the client's timeout).
"""

from __future__ import annotations

import time
from typing import Any, Final, NamedTuple

from kvcluster.errors import (
    ClusterUnavailable,
    KeyNotFound,
    KVError,
    NamespaceFull,
    Timeout,
    ValueTooLarge,
)
from kvcluster.keys import encode_key
from kvcluster.rediscluster.layout import (
    LOCKED,
    Limits,
    Record,
    counter_key,
    decode_record,
    namespace_pattern,
    record_tail,
    user_key,
    value_key,
)
from kvcluster.rediscluster.locks import Undecided, read_through, write_through
from kvcluster.rediscluster.plans import Command, Plan, chunked, single
from kvcluster.rediscluster.registry import Registry, scan_page
from kvcluster.rediscluster.scripts import REMOVE, UPDATE, WRITE
from kvcluster.scope import Scope, checked_scope
from kvcluster.values import pack_value, unpack_value

__all__ = [
    "MAX_VALUE_BYTES",
    "Space",
    "consume",
    "count",
    "deadline",
    "delete",
    "delete_item",
    "exists",
    "full",
    "get",
    "get_item",
    "get_versioned",
    "namespace_stats",
    "packed_value",
    "present_keys",
    "read",
    "read_records",
    "release",
    "reserve",
    "scan_rows",
    "unknown_outcome",
    "update",
    "write",
]

MAX_VALUE_BYTES: Final = (512 << 20) - 64  # a Redis string holds 512 MiB, the record header included


class Space(NamedTuple):
    """A namespace as the plans see it: its name, its validated bytes, and the client's
    timeout (how long a write waits for another client's batch to be decided)."""

    name: str
    ns: bytes
    timeout: float = 10.0


def deadline(space: Space) -> float:
    """When an operation starting now stops waiting for locks (time.monotonic())."""
    return time.monotonic() + space.timeout


def packed_value(value: Any, limits: Limits) -> bytes:
    """msgpack bytes of `value`; InvalidRequest or ValueTooLarge if it cannot be stored."""
    packed = pack_value(value)
    if limits.max_value_bytes and len(packed) > limits.max_value_bytes:
        raise ValueTooLarge(f"value is {len(packed)} bytes; the namespace allows {limits.max_value_bytes}")
    if len(packed) > MAX_VALUE_BYTES:
        raise ValueTooLarge(f"value is {len(packed)} bytes packed; a Redis string holds at most {MAX_VALUE_BYTES}")
    return packed


def unknown_outcome(error: KVError) -> bool:
    """True when a failed write may have been applied all the same (no answer came)."""
    return isinstance(error, (Timeout, ClusterUnavailable)) and not isinstance(error, Undecided)


# -- the key counter (max_keys > 0) ----------------------------------------------------


def reserve(space: Space, limits: Limits, count: int) -> Plan[int]:
    """Reserve room for `count` new keys; how many of them fit (the rest is given back)."""
    if count <= 0:
        return 0
    total = yield from single(Command(("INCRBY", counter_key(space.ns), count)))
    over = min(count, int(total) - limits.max_keys)
    if over > 0:
        yield from single(Command(("DECRBY", counter_key(space.ns), over)))
        return count - over
    return count


def release(space: Space, count: int) -> Plan[None]:
    """Give back room: keys deleted, or reserved and not created."""
    if count > 0:
        yield from single(Command(("DECRBY", counter_key(space.ns), count)))


def full(space: Space, limits: Limits) -> NamespaceFull:
    return NamespaceFull(f"namespace {space.name!r} holds its max_keys={limits.max_keys} keys")


# -- single keys -----------------------------------------------------------------------


def write(registry: Registry, space: Space, key: Any, value: Any, scope: Any) -> Plan[int]:
    """set(): store the value; its timestamp."""
    stored = value_key(space.ns, encode_key(key))
    scope = checked_scope(scope)
    limits = yield from registry.limits(space.name)
    tail = record_tail(scope, packed_value(value, limits))
    until = deadline(space)
    if not limits.max_keys:
        ts, _created = yield from write_through(WRITE.call([stored], [-1, tail]), [stored], until)
        return int(ts)
    ts, _created = yield from write_through(WRITE.call([stored], [0, tail]), [stored], until)  # replacing: no room
    if ts >= 0:
        return int(ts)
    if not (yield from reserve(space, limits, 1)):
        raise full(space, limits)
    try:
        ts, created = yield from write_through(WRITE.call([stored], [1, tail]), [stored], until)
    except KVError as exc:
        if not unknown_outcome(exc):
            yield from release(space, 1)
        raise
    if not created:  # another client created it meanwhile
        yield from release(space, 1)
    return int(ts)


def read(registry: Registry, space: Space, key: Any) -> Plan[Record | None]:
    stored = value_key(space.ns, encode_key(key))
    yield from registry.limits(space.name)
    (record,) = yield from read_records([stored])
    return record


def read_records(stored: list[bytes]) -> Plan[list[Record | None]]:
    """The records of value keys (None: no key), each read on its own (GET), locks
    resolved; the first error raised."""
    raws = yield from chunked([Command(("GET", key)) for key in stored])
    records = yield from read_through(stored, raws)
    found: list[Record | None] = []
    for record in records:
        if isinstance(record, KVError):
            raise record
        found.append(record)
    return found


def get(registry: Registry, space: Space, key: Any, default: Any) -> Plan[Any]:
    record = yield from read(registry, space, key)
    return default if record is None else unpack_value(record.packed)


def get_versioned(registry: Registry, space: Space, key: Any) -> Plan[tuple[Any, int] | None]:
    record = yield from read(registry, space, key)
    return None if record is None else (unpack_value(record.packed), record.ts)


def get_item(registry: Registry, space: Space, key: Any) -> Plan[Any]:
    """`ns[key]`: like get, but a missing key is KeyNotFound (a KeyError)."""
    record = yield from read(registry, space, key)
    if record is None:
        raise KeyNotFound(f"key {key!r} does not exist")
    return unpack_value(record.packed)


def exists(registry: Registry, space: Space, key: Any) -> Plan[bool]:
    stored = value_key(space.ns, encode_key(key))
    yield from registry.limits(space.name)
    (present,) = yield from present_keys([stored])
    return present


def present_keys(stored: list[bytes]) -> Plan[list[bool]]:
    """Whether each value key exists: its scope byte alone is read, and a lock is
    resolved (a key an undecided batch creates does not exist yet)."""
    answers = yield from chunked([Command(("GETRANGE", key, 8, 8)) for key in stored])  # b"": no key
    present: list[bool] = []
    locked: list[int] = []
    for i, answer in enumerate(answers):
        if isinstance(answer, KVError):
            raise answer
        present.append(bool(answer))
        if answer == bytes((LOCKED,)):
            locked.append(i)
    if locked:
        records = yield from read_records([stored[i] for i in locked])
        for i, record in zip(locked, records, strict=True):
            present[i] = record is not None
    return present


def update(registry: Registry, space: Space, key: Any, value: Any) -> Plan[Any]:
    """Replace an existing key's value (its scope stays); the old value. KeyNotFound if absent."""
    stored = value_key(space.ns, encode_key(key))
    limits = yield from registry.limits(space.name)
    answer = yield from write_through(UPDATE.call([stored], [packed_value(value, limits)]), [stored], deadline(space))
    if answer is None:
        raise KeyNotFound(f"key {key!r} does not exist")
    return unpack_value(decode_record(answer[1], stored).packed)


def consume(registry: Registry, space: Space, key: Any) -> Plan[Any]:
    """Read and delete a key at once; its value. KeyNotFound if absent."""
    stored = value_key(space.ns, encode_key(key))
    limits = yield from registry.limits(space.name)
    answer = yield from write_through(REMOVE.call([stored], ["1", "1"]), [stored], deadline(space))
    if answer[0] < 0:
        raise KeyNotFound(f"key {key!r} does not exist")
    if limits.max_keys:
        yield from release(space, 1)
    return unpack_value(decode_record(answer[2][0], stored).packed)


def delete(registry: Registry, space: Space, key: Any) -> Plan[bool]:
    """Delete a key; whether it existed."""
    stored = value_key(space.ns, encode_key(key))
    limits = yield from registry.limits(space.name)
    answer = yield from write_through(REMOVE.call([stored], ["1", "0"]), [stored], deadline(space))
    if answer[0] < 0:
        return False
    if limits.max_keys:
        yield from release(space, 1)
    return True


def delete_item(registry: Registry, space: Space, key: Any) -> Plan[None]:
    """`del ns[key]`: a missing key is KeyNotFound (a KeyError)."""
    if not (yield from delete(registry, space, key)):
        raise KeyNotFound(f"key {key!r} does not exist")


def count(registry: Registry, space: Space, nodes: list[str]) -> Plan[int]:
    """`len(ns)`: the namespace's keys, counted by SCAN on every primary."""
    yield from registry.limits(space.name)
    return (yield from _count_keys(space.ns, nodes))


def _count_keys(ns: bytes, nodes: list[str]) -> Plan[int]:
    """The keys of a namespace: SCAN on every primary, and each key's scope byte, so
    that a key an undecided batch creates is not counted yet (present_keys)."""
    total = 0
    for node in nodes:
        cursor = 0
        while True:
            cursor, keys = yield from scan_page(node, cursor, namespace_pattern(ns))
            total += sum((yield from present_keys(keys)))
            if not cursor:
                break
    return total


def namespace_stats(registry: Registry, space: Space, nodes: list[str]) -> Plan[dict[str, Any]]:
    limits = yield from registry.limits(space.name, fresh=True)
    keys = yield from _count_keys(space.ns, nodes)
    return {"name": space.name, "keys": keys, "max_keys": limits.max_keys, "max_value_bytes": limits.max_value_bytes}


# -- scans -----------------------------------------------------------------------------


def scan_rows(
    registry: Registry, space: Space, node: str, cursor: int, scope: Scope | None
) -> Plan[tuple[int, list[tuple[str, Any, int]]]]:
    """One page of a namespace's keys on one primary: (next cursor, 0 when done;
    [(key, value, ts)]). Keys deleted between the SCAN and the GET are left out."""
    if scope is not None:
        checked_scope(scope)
    if not cursor:
        yield from registry.limits(space.name)
    cursor, keys = yield from scan_page(node, cursor, namespace_pattern(space.ns))
    records = yield from read_records(keys)
    rows: list[tuple[str, Any, int]] = []
    for stored, record in zip(keys, records, strict=True):
        if record is None:
            continue
        if scope is None or record.scope is scope:
            rows.append((user_key(space.ns, stored), unpack_value(record.packed), record.ts))
    return cursor, rows
