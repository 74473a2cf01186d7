"""Batches on a Redis Cluster — `set_many`, `get_many`, `delete_many`, `consume_many` — as plans.

BEST_EFFORT: each key on its own — one script call (or GET) per key, pipelined node
by node; what fails is listed in `errors` and the rest applies.

ALL_OR_NOTHING: Redis Cluster runs a script atomically only on keys of one hash
slot. A batch whose keys all share a slot is one script call: every change applies
or none does, at one timestamp. A batch over several slots is refused before
anything is sent (InvalidRequest naming the slots), and so is `get_many`, whose
reads of several slots would not form one view: give the keys one `{hash tag}`, or
use BEST_EFFORT. (A commit protocol across slots would slot in here.)

The results have the local engine's shape and meaning (kvcluster.batch.BatchResult,
BatchFailed with per-key errors; client/batches.py is the local twin).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from kvcluster.batch import BatchMode, BatchResult
from kvcluster.errors import BatchFailed, ClusterUnavailable, InvalidRequest, KeyNotFound, KVError
from kvcluster.keys import encode_keys
from kvcluster.rediscluster.core import (
    Space,
    checked_scope,
    full,
    packed_value,
    release,
    reserve,
    unknown_outcome,
)
from kvcluster.rediscluster.layout import Limits, decode_record, record_tail, value_key
from kvcluster.rediscluster.plans import Command, Plan, chunked, single
from kvcluster.rediscluster.registry import Registry
from kvcluster.rediscluster.scripts import REMOVE, WRITE
from kvcluster.rediscluster.slots import key_slot
from kvcluster.values import unpack_value

__all__ = ["MAX_ATOMIC_KEYS", "consume_many", "delete_many", "get_many", "one_slot", "set_many"]

MAX_ATOMIC_KEYS: Final = 1 << 15  # keys of one all-or-nothing script call (as a local shard's part)
RESERVE_RETRIES: Final = 8  # tries of an all-or-nothing set_many whose new keys keep changing

_MISSING: Final = object()


# -- input -------------------------------------------------------------------------------


def _mode(mode: Any) -> BatchMode:
    if not isinstance(mode, BatchMode):
        raise InvalidRequest(f"mode must be a kvcluster.BatchMode, not {mode!r}")
    return mode


def _keys(keys: Iterable[Any]) -> tuple[list[Any], list[bytes]]:
    listed = list(keys)
    raw = encode_keys(listed)
    if len(set(raw)) != len(raw):
        raise InvalidRequest("a batch names each key once")
    return listed, raw


def _pairs(items: Any) -> tuple[list[Any], list[Any]]:
    if isinstance(items, Mapping):
        return list(items.keys()), list(items.values())
    pairs = list(items)
    if pairs and (set(map(type, pairs)) - {tuple, list} or set(map(len, pairs)) != {2}):
        raise InvalidRequest("set_many takes a mapping, or (key, value) pairs")
    return [pair[0] for pair in pairs], [pair[1] for pair in pairs]


def one_slot(stored: list[bytes], what: str) -> None:
    """Refuse an all-or-nothing batch that Redis Cluster cannot apply atomically."""
    slots = {key_slot(key) for key in stored}
    if len(slots) > 1:
        raise InvalidRequest(
            f"{what} in BatchMode.ALL_OR_NOTHING: its {len(stored)} keys span {len(slots)} hash slots, and "
            "Redis Cluster is atomic only within one slot; nothing was sent. Give the keys one {hash tag} "
            "(e.g. 'cart:{42}:items' and 'cart:{42}:total' share a slot), or use BatchMode.BEST_EFFORT"
        )
    if len(stored) > MAX_ATOMIC_KEYS:
        raise InvalidRequest(
            f"an all-or-nothing batch takes at most {MAX_ATOMIC_KEYS} keys on Redis Cluster; "
            "split it, or use BatchMode.BEST_EFFORT"
        )


# -- results -----------------------------------------------------------------------------


def _result(keys: list[Any], data: list[Any], errors: dict[int, KVError]) -> BatchResult:
    ordered = {key: item for key, item in zip(keys, data, strict=True) if item is not _MISSING}
    if not errors:
        return BatchResult(len(ordered), ordered)
    return BatchResult(len(ordered), ordered, {keys[i]: errors[i] for i in sorted(errors)})


def _failed(
    keys: list[Any], errors: dict[int, KVError], what: str, outcome: str = "nothing was applied"
) -> BatchFailed:
    failed = {keys[i]: errors[i] for i in sorted(errors)}
    first = next(iter(failed.items()))
    return BatchFailed(
        f"{what}: {len(failed)} of {len(keys)} keys failed (first {first[0]!r}: {first[1]}); {outcome}", failed
    )


def _missing_key(key: Any) -> KeyNotFound:
    return KeyNotFound(f"key {key!r} does not exist")


# -- set_many ----------------------------------------------------------------------------


def set_many(registry: Registry, space: Space, items: Any, mode: Any, scope: Any) -> Plan[BatchResult]:
    keys, values = _pairs(items)
    scope = checked_scope(scope)
    keys, raw = _keys(keys)
    mode = _mode(mode)
    if not keys:
        return BatchResult(0, {})
    stored = [value_key(space.ns, key) for key in raw]
    if mode is BatchMode.ALL_OR_NOTHING:
        one_slot(stored, "set_many")
    limits = yield from registry.limits(space.name)
    errors: dict[int, KVError] = {}
    tails: list[bytes] = []
    for i, value in enumerate(values):
        try:
            tails.append(record_tail(scope, packed_value(value, limits)))
        except KVError as exc:  # too large, or not something msgpack carries
            errors[i] = exc
            tails.append(b"")
    if mode is BatchMode.ALL_OR_NOTHING:
        if errors:
            raise _failed(keys, errors, "set_many")
        ts = yield from _set_atomically(space, limits, keys, stored, tails)
        return BatchResult(len(keys), dict.fromkeys(keys, ts))
    return (yield from _set_each(space, limits, keys, stored, tails, errors))


def _set_atomically(
    space: Space, limits: Limits, keys: list[Any], stored: list[bytes], tails: list[bytes]
) -> Plan[int]:
    if not limits.max_keys:
        ts, _created = yield from single(WRITE.call(stored, [-1, *tails]))
        return int(ts)
    reserved = 0
    for _attempt in range(RESERVE_RETRIES):
        try:
            ts, absent = yield from single(WRITE.call(stored, [reserved, *tails]))
        except KVError as exc:
            if not unknown_outcome(exc):
                yield from release(space, reserved)
            raise
        if ts >= 0:
            yield from release(space, reserved - len(absent))
            return int(ts)
        need = len(absent) - reserved
        granted = yield from reserve(space, limits, need)
        reserved += granted
        if granted < need:
            yield from release(space, reserved)
            error = full(space, limits)
            raise _failed(keys, {i - 1: error for i in absent}, "set_many")
    yield from release(space, reserved)
    busy = ClusterUnavailable("other clients kept creating and deleting these keys; retry")
    raise _failed(keys, dict.fromkeys(range(len(keys)), busy), "set_many")


def _set_each(
    space: Space,
    limits: Limits,
    keys: list[Any],
    stored: list[bytes],
    tails: list[bytes],
    errors: dict[int, KVError],
) -> Plan[BatchResult]:
    data: list[Any] = [_MISSING] * len(keys)
    pending = [i for i in range(len(keys)) if i not in errors]
    room = -1 if not limits.max_keys else 0  # counted: first write the keys that exist
    outcomes = yield from chunked([WRITE.call([stored[i]], [room, tails[i]]) for i in pending])
    new: list[int] = []
    for i, outcome in zip(pending, outcomes, strict=True):
        if isinstance(outcome, KVError):
            errors[i] = outcome
        elif outcome[0] < 0:
            new.append(i)
        else:
            data[i] = int(outcome[0])
    if new:
        granted = yield from reserve(space, limits, len(new))
        error = full(space, limits)
        errors.update((i, error) for i in new[granted:])  # as many new keys as fit, in input order
        taken = new[:granted]
        outcomes = yield from chunked([WRITE.call([stored[i]], [1, tails[i]]) for i in taken])
        unused = 0
        for i, outcome in zip(taken, outcomes, strict=True):
            if isinstance(outcome, KVError):
                errors[i] = outcome
                unused += not unknown_outcome(outcome)
            else:
                data[i] = int(outcome[0])
                unused += not outcome[1]  # another client created it meanwhile
        yield from release(space, unused)
    return _result(keys, data, errors)


# -- get_many ----------------------------------------------------------------------------


def get_many(registry: Registry, space: Space, keys: Iterable[Any], mode: Any) -> Plan[BatchResult]:
    listed = list(keys)
    raw = encode_keys(listed)  # a clear error for a bad key before anything is sent
    if len(set(raw)) != len(raw):  # a key asked twice is read once
        listed = list(dict.fromkeys(listed))
        raw = encode_keys(listed)
    mode = _mode(mode)
    if not listed:
        return BatchResult(0, {})
    stored = [value_key(space.ns, key) for key in raw]
    if mode is BatchMode.ALL_OR_NOTHING:
        one_slot(stored, "get_many")
    yield from registry.limits(space.name)
    errors: dict[int, KVError] = {}
    if mode is BatchMode.ALL_OR_NOTHING:
        found = yield from single(Command(("MGET", *stored)))  # one slot: one consistent read
    else:
        found = yield from chunked([Command(("GET", key)) for key in stored])
    data: list[Any] = [_MISSING] * len(listed)
    for i, raw_record in enumerate(found):
        if isinstance(raw_record, KVError):
            errors[i] = raw_record
        elif raw_record is None:
            errors[i] = _missing_key(listed[i])
        else:
            data[i] = unpack_value(decode_record(raw_record, stored[i]).packed)
    if errors and mode is BatchMode.ALL_OR_NOTHING:
        raise _failed(listed, errors, "get_many", "no data is returned")
    return _result(listed, data, errors)


# -- delete_many, consume_many -------------------------------------------------------------


def delete_many(registry: Registry, space: Space, keys: Iterable[Any], mode: Any) -> Plan[BatchResult]:
    return _remove_many(registry, space, keys, mode, consume=False)


def consume_many(registry: Registry, space: Space, keys: Iterable[Any], mode: Any) -> Plan[BatchResult]:
    return _remove_many(registry, space, keys, mode, consume=True)


def _remove_many(registry: Registry, space: Space, keys: Iterable[Any], mode: Any, consume: bool) -> Plan[BatchResult]:
    listed, raw = _keys(keys)
    mode = _mode(mode)
    what = "consume_many" if consume else "delete_many"
    if not listed:
        return BatchResult(0, {})
    stored = [value_key(space.ns, key) for key in raw]
    if mode is BatchMode.ALL_OR_NOTHING:
        one_slot(stored, what)
    limits = yield from registry.limits(space.name)
    flags = ["1", "1" if consume else "0"]
    data: list[Any] = [_MISSING] * len(listed)
    errors: dict[int, KVError] = {}
    if mode is BatchMode.ALL_OR_NOTHING:
        answer = yield from single(REMOVE.call(stored, flags))
        if answer[0] < 0:
            raise _failed(listed, {i - 1: _missing_key(listed[i - 1]) for i in answer[1]}, what)
        for i in range(len(listed)):
            data[i] = unpack_value(decode_record(answer[2][i], stored[i]).packed) if consume else int(answer[0])
        removed = len(listed)
    else:
        outcomes = yield from chunked([REMOVE.call([key], flags) for key in stored])
        removed = 0
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, KVError):
                errors[i] = outcome
            elif outcome[0] < 0:
                errors[i] = _missing_key(listed[i])
            else:
                data[i] = unpack_value(decode_record(outcome[2][0], stored[i]).packed) if consume else int(outcome[0])
                removed += 1
    if limits.max_keys:
        yield from release(space, removed)
    return _result(listed, data, errors)
