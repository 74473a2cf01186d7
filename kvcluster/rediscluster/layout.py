"""How kvcluster's data lies in a Redis Cluster: key names and record bytes. The one
place that knows them (docs/redis-cluster.md is its page, with worked examples).

Value keys    kv|<namespace>|<key>          a Redis string holding one record
Record        ts (8 bytes, big-endian µs) · scope (1 byte) · the value's msgpack bytes
Registry      kv|{meta}|namespaces          a hash: namespace name -> msgpack limits
Key counters  kv|{meta}|count|<namespace>   an integer; only while max_keys > 0

Namespace names cannot contain `|`, so a value key names its namespace without
ambiguity. A user key holding a Redis hash tag (`{...}`) decides the key's slot, as
Redis users expect; the metadata keys share the `{meta}` tag, so one script can
change a namespace's entry and its counter together.
"""

from __future__ import annotations

import struct
from typing import Any, Final, NamedTuple

import msgpack

from kvcluster.errors import StorageError
from kvcluster.scope import Scope

__all__ = [
    "HEADER",
    "KEY_PREFIX",
    "REGISTRY_KEY",
    "Limits",
    "Record",
    "counter_key",
    "decode_limits",
    "decode_record",
    "encode_limits",
    "encode_record",
    "namespace_of",
    "namespace_pattern",
    "record_tail",
    "user_key",
    "value_key",
]

KEY_PREFIX: Final = b"kv|"
SEPARATOR: Final = b"|"
REGISTRY_KEY: Final = b"kv|{meta}|namespaces"
COUNTER_PREFIX: Final = b"kv|{meta}|count|"
ALL_VALUES: Final = b"kv|*"  # a SCAN pattern matching every value key (and the {meta} keys)
META_NAMESPACE: Final = b"{meta}"
HEADER: Final = struct.Struct(">QB")  # timestamp (µs), scope
_SCOPES: Final = frozenset(int(scope) for scope in Scope)


class Record(NamedTuple):
    """One stored value: its timestamp, its scope and its msgpack bytes."""

    ts: int
    scope: Scope
    packed: bytes


class Limits(NamedTuple):
    """A namespace's limits; 0 is no limit."""

    max_keys: int
    max_value_bytes: int


def value_key(ns: bytes, key: bytes) -> bytes:
    """The Redis key of `key` (UTF-8) in namespace `ns` (ASCII, already validated)."""
    return KEY_PREFIX + ns + SEPARATOR + key


def namespace_pattern(ns: bytes) -> bytes:
    """A SCAN MATCH pattern for every value key of `ns` (its names hold no glob characters)."""
    return KEY_PREFIX + ns + SEPARATOR + b"*"


def user_key(ns: bytes, stored: bytes) -> str:
    """The user's key back from its Redis key."""
    return stored[len(KEY_PREFIX) + len(ns) + 1 :].decode()


def namespace_of(stored: bytes) -> str | None:
    """The namespace a Redis key belongs to, or None for a key that is not a value key."""
    if not stored.startswith(KEY_PREFIX):
        return None
    ns, separator, _key = stored[len(KEY_PREFIX) :].partition(SEPARATOR)
    if not separator or ns == META_NAMESPACE:
        return None
    return ns.decode(errors="replace")


def counter_key(ns: bytes) -> bytes:
    return COUNTER_PREFIX + ns


def record_tail(scope: Scope | int, packed: bytes) -> bytes:
    """What a write script stores after the timestamp it chooses: scope byte and value."""
    return bytes((int(scope),)) + packed


def encode_record(ts: int, scope: Scope | int, packed: bytes) -> bytes:
    return HEADER.pack(ts, int(scope)) + packed


def decode_record(data: Any, where: bytes = b"") -> Record:
    """The record in a Redis string; StorageError for bytes that are not one."""
    if type(data) is not bytes or len(data) <= HEADER.size:
        size = len(data) if isinstance(data, bytes) else type(data).__name__
        raise StorageError(f"Redis key {where!r} does not hold a kvcluster record ({size} bytes)")
    ts, scope = HEADER.unpack_from(data)
    if scope not in _SCOPES:
        raise StorageError(f"Redis key {where!r} holds scope byte {scope}: not a kvcluster record")
    return Record(ts, Scope(scope), data[HEADER.size :])


def encode_limits(limits: Limits) -> bytes:
    data: bytes = msgpack.packb({"max_keys": limits.max_keys, "max_value_bytes": limits.max_value_bytes})
    return data


def decode_limits(data: Any, name: str) -> Limits:
    """A registry entry's limits; StorageError if it is not one."""
    try:
        entry = msgpack.unpackb(data)
        return Limits(int(entry["max_keys"]), int(entry["max_value_bytes"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise StorageError(f"the registry entry of namespace {name!r} is damaged ({exc})") from None
