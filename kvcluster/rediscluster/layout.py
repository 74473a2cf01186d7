"""How kvcluster's data lies in a Redis Cluster: key names and record bytes. The one
place that knows them (docs/redis-cluster.md is its page, with worked examples).

Value keys    kv|<namespace>|<key>          a Redis string holding one record, or a lock
Record        ts (8 bytes, big-endian µs) · scope (1 byte) · the value's msgpack bytes
Lock          old ts (8 bytes) · 0xFF · msgpack [old record | nil, new tail | nil, txn id, txn key]
Txn records   kv|{<tag>}|txn|<txn id>       msgpack {state, expires, ts, keys, primary}
Registry      kv|{meta}|namespaces          a hash: namespace name -> msgpack limits
Key counters  kv|{meta}|count|<namespace>   an integer; only while max_keys > 0

Namespace names cannot contain `|`, so a value key names its namespace without
ambiguity. A user key holding a Redis hash tag (`{...}`) decides the key's slot, as
Redis users expect; the metadata keys share the `{meta}` tag, so one script can
change a namespace's entry and its counter together.

A lock is what a cross-slot all-or-nothing batch leaves on a value key between its
prepare and its roll forward (txn.py; docs/redis-cluster.md section 6): the record the
key held before (or nil: the key did not exist), the tail (scope byte and value) it
will hold once the batch commits (nil: the batch deletes it), the batch's id and the
key of its txn record. A txn record's `<tag>` puts it in the slot of the batch's first
key (slots.slot_tag); its `keys` are the batch's value keys outside that slot, its
`primary` those inside.
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
    "LOCKED",
    "REGISTRY_KEY",
    "TXN_STATES",
    "Limits",
    "Lock",
    "Record",
    "TxnRecord",
    "counter_key",
    "decode_limits",
    "decode_record",
    "decode_stored",
    "decode_txn",
    "encode_limits",
    "encode_lock",
    "encode_record",
    "encode_txn",
    "namespace_of",
    "namespace_pattern",
    "record_tail",
    "txn_key",
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
LOCKED: Final = 0xFF  # the scope byte of a lock
TXN_INFIX: Final = b"|txn|"
TXN_STATES: Final = frozenset({"pending", "committed", "aborted"})


class Record(NamedTuple):
    """One stored value: its timestamp, its scope and its msgpack bytes."""

    ts: int
    scope: Scope
    packed: bytes


class Lock(NamedTuple):
    """A value key locked by a cross-slot batch between its prepare and its roll forward."""

    old: bytes | None  # the whole record the key held, or None: it did not exist
    new: bytes | None  # scope byte and value once the batch commits, or None: it deletes the key
    txn_id: bytes
    txn_key: bytes  # its txn record

    def old_record(self, where: bytes = b"") -> Record | None:
        return None if self.old is None else decode_record(self.old, where)


class TxnRecord(NamedTuple):
    """A cross-slot batch's decision record, in the slot of its first key."""

    state: str  # pending, committed or aborted
    expires: int  # µs, by the primary node's clock: a pending batch can no longer commit from then on
    ts: int  # the batch's timestamp once committed, else 0
    keys: list[bytes]  # its value keys outside the record's slot (the secondaries)
    primary: list[bytes]  # its value keys in the record's slot


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
    if not separator or ns.startswith(b"{"):  # {meta} keys, txn records
        return None
    return ns.decode(errors="replace")


def txn_key(tag: bytes, txn_id: bytes) -> bytes:
    """The txn record of batch `txn_id`, in the slot of hash tag `tag`."""
    return KEY_PREFIX + b"{" + tag + b"}" + TXN_INFIX + txn_id


def counter_key(ns: bytes) -> bytes:
    return COUNTER_PREFIX + ns


def record_tail(scope: Scope | int, packed: bytes) -> bytes:
    """What a write script stores after the timestamp it chooses: scope byte and value."""
    return bytes((int(scope),)) + packed


def encode_record(ts: int, scope: Scope | int, packed: bytes) -> bytes:
    return HEADER.pack(ts, int(scope)) + packed


def decode_record(data: Any, where: bytes = b"") -> Record:
    """The record in a Redis string; StorageError for bytes that are not one (a lock included)."""
    stored = decode_stored(data, where)
    if isinstance(stored, Lock):
        raise StorageError(f"Redis key {where!r} holds a lock where a record was expected")
    return stored


def decode_stored(data: Any, where: bytes = b"") -> Record | Lock:
    """What a value key holds: a record, or the lock of a cross-slot batch (the caller
    resolves it: locks.py); StorageError for bytes that are neither."""
    if type(data) is not bytes or len(data) <= HEADER.size:
        size = len(data) if isinstance(data, bytes) else type(data).__name__
        raise StorageError(f"Redis key {where!r} does not hold a kvcluster record ({size} bytes)")
    ts, scope = HEADER.unpack_from(data)
    if scope == LOCKED:
        return _decode_lock(data, where)
    if scope not in _SCOPES:
        raise StorageError(f"Redis key {where!r} holds scope byte {scope}: not a kvcluster record")
    return Record(ts, Scope(scope), data[HEADER.size :])


def encode_lock(old_ts: int, old: bytes | None, new: bytes | None, txn_id: bytes, txn: bytes) -> bytes:
    """A lock's bytes (the PREPARE script makes them; this is their definition)."""
    fields: bytes = msgpack.packb([old, new, txn_id, txn], use_bin_type=True)
    return HEADER.pack(old_ts, LOCKED) + fields


def _decode_lock(data: bytes, where: bytes) -> Lock:
    try:
        old, new, txn_id, txn = msgpack.unpackb(data[HEADER.size :])
        if not all(isinstance(part, bytes) for part in (txn_id, txn)) or not all(
            part is None or isinstance(part, bytes) for part in (old, new)
        ):
            raise ValueError("a field has the wrong type")
    except (TypeError, ValueError, msgpack.UnpackException) as exc:
        raise StorageError(f"Redis key {where!r} holds a damaged lock ({exc})") from None
    return Lock(old, new, txn_id, txn)


def encode_txn(record: TxnRecord) -> bytes:
    """A txn record's bytes, as the scripts write them (msgpack strings: Lua's cmsgpack)."""
    data: bytes = msgpack.packb(
        {
            "state": record.state,
            "expires": record.expires,
            "ts": record.ts,
            "keys": record.keys,
            "primary": record.primary,
        },
        use_bin_type=False,
    )
    return data


def decode_txn(data: Any, where: bytes = b"") -> TxnRecord:
    """A txn record; StorageError for bytes that are not one."""
    try:
        entry = msgpack.unpackb(data, raw=True)
        state = entry[b"state"].decode()
        if state not in TXN_STATES:
            raise ValueError(f"state {state!r}")
        keys, primary = entry[b"keys"] or [], entry[b"primary"] or []
        if not all(isinstance(key, bytes) for key in (*keys, *primary)):
            raise ValueError("a key is not a string")
        return TxnRecord(state, int(entry[b"expires"]), int(entry[b"ts"]), list(keys), list(primary))
    except (TypeError, ValueError, KeyError, AttributeError, msgpack.UnpackException) as exc:
        raise StorageError(f"the txn record {where!r} is damaged ({exc})") from None


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
