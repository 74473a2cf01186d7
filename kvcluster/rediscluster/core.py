"""Single-key operations, scans and key counting of the Redis Cluster backend, as plans.

Reads are plain GET/EXISTS, decoded here; writes run the scripts of scripts.py. Every
operation first checks its namespace against the client's registry cache (no round
trip while it is fresh): NamespaceNotFound once it is deleted, ValueTooLarge against
its `max_value_bytes`, and whether its keys are counted (`max_keys` > 0).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from kvcluster.errors import (
    ClusterUnavailable,
    InvalidRequest,
    KeyNotFound,
    KVError,
    NamespaceFull,
    Timeout,
    ValueTooLarge,
)
from kvcluster.keys import encode_key
from kvcluster.rediscluster.layout import (
    Limits,
    Record,
    counter_key,
    decode_record,
    namespace_pattern,
    record_tail,
    user_key,
    value_key,
)
from kvcluster.rediscluster.plans import Command, Plan, chunked, single
from kvcluster.rediscluster.registry import Registry, count_keys, scan_page
from kvcluster.rediscluster.scripts import REMOVE, UPDATE, WRITE
from kvcluster.scope import Scope
from kvcluster.values import pack_value, unpack_value

__all__ = [
    "MAX_VALUE_BYTES",
    "Space",
    "checked_scope",
    "consume",
    "count",
    "delete",
    "delete_item",
    "exists",
    "full",
    "get",
    "get_item",
    "get_versioned",
    "namespace_stats",
    "packed_value",
    "read",
    "release",
    "reserve",
    "scan_rows",
    "unknown_outcome",
    "update",
    "write",
]

MAX_VALUE_BYTES: Final = (512 << 20) - 64  # a Redis string holds 512 MiB, the record header included


class Space(NamedTuple):
    """A namespace as the plans see it: its name and its validated bytes."""

    name: str
    ns: bytes


def checked_scope(scope: Any) -> Scope:
    if not isinstance(scope, Scope):
        raise InvalidRequest(f"scope must be a kvcluster.Scope, not {scope!r}")
    return scope


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
    return isinstance(error, (Timeout, ClusterUnavailable))


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
    if not limits.max_keys:
        ts, _created = yield from single(WRITE.call([stored], [-1, tail]))
        return int(ts)
    ts, _created = yield from single(WRITE.call([stored], [0, tail]))  # replacing needs no room
    if ts >= 0:
        return int(ts)
    if not (yield from reserve(space, limits, 1)):
        raise full(space, limits)
    try:
        ts, created = yield from single(WRITE.call([stored], [1, tail]))
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
    raw = yield from single(Command(("GET", stored)))
    return None if raw is None else decode_record(raw, stored)


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
    return bool((yield from single(Command(("EXISTS", stored)))))


def update(registry: Registry, space: Space, key: Any, value: Any) -> Plan[Any]:
    """Replace an existing key's value (its scope stays); the old value. KeyNotFound if absent."""
    stored = value_key(space.ns, encode_key(key))
    limits = yield from registry.limits(space.name)
    answer = yield from single(UPDATE.call([stored], [packed_value(value, limits)]))
    if answer is None:
        raise KeyNotFound(f"key {key!r} does not exist")
    return unpack_value(decode_record(answer[1], stored).packed)


def consume(registry: Registry, space: Space, key: Any) -> Plan[Any]:
    """Read and delete a key at once; its value. KeyNotFound if absent."""
    stored = value_key(space.ns, encode_key(key))
    limits = yield from registry.limits(space.name)
    answer = yield from single(REMOVE.call([stored], ["1", "1"]))
    if answer[0] < 0:
        raise KeyNotFound(f"key {key!r} does not exist")
    if limits.max_keys:
        yield from release(space, 1)
    return unpack_value(decode_record(answer[2][0], stored).packed)


def delete(registry: Registry, space: Space, key: Any) -> Plan[bool]:
    """Delete a key; whether it existed."""
    stored = value_key(space.ns, encode_key(key))
    limits = yield from registry.limits(space.name)
    answer = yield from single(REMOVE.call([stored], ["1", "0"]))
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
    return (yield from count_keys(space.ns, nodes))


def namespace_stats(registry: Registry, space: Space, nodes: list[str]) -> Plan[dict[str, Any]]:
    limits = yield from registry.limits(space.name, fresh=True)
    keys = yield from count_keys(space.ns, nodes)
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
    raws = yield from chunked([Command(("GET", key)) for key in keys])
    rows: list[tuple[str, Any, int]] = []
    for stored, raw in zip(keys, raws, strict=True):
        if isinstance(raw, KVError):
            raise raw
        if raw is None:
            continue
        record = decode_record(raw, stored)
        if scope is None or record.scope is scope:
            rows.append((user_key(space.ns, stored), unpack_value(record.packed), record.ts))
    return cursor, rows
