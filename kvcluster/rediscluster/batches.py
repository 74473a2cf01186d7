"""Batches on a Redis Cluster — `set_many`, `get_many`, `delete_many`, `consume_many` — as plans.

BEST_EFFORT: each key on its own — one script call (or GET) per key, pipelined node
by node; what fails is listed in `errors` and the rest applies.

ALL_OR_NOTHING: Redis Cluster runs a script atomically only on keys of one hash
slot. A batch whose keys all share a slot is one script call (the fast path): every
change applies or none does, at one timestamp; `get_many` is one MGET. A batch over
several slots runs the commit protocol of txn.py — prepare every slot's keys as
locks, commit on the first key's slot, roll the others forward — with the same
result: all or nothing, at one timestamp, across crashes. `get_many` over several
slots reads every slot until two rounds in a row find the same records and no lock:
one consistent view (docs/redis-cluster.md, section 6, says why).

Keys locked by a cross-slot batch in progress are resolved as locks.py says: a write
waits for the batch's decision (at most the client's timeout), a read of one slot
takes the old records of an undecided batch.

The results have the local engine's shape and meaning (kvcluster.batch.BatchResult,
BatchFailed with per-key errors; client/batches.py is the local twin): both backends
check a batch's input and shape its outcome with the same functions (batch_common.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Final

from kvcluster.batch import BatchMode, BatchResult
from kvcluster.batch_common import (
    MISSING,
    batch_failed,
    batch_result,
    checked_mode,
    missing_key,
    read_keys,
    set_pairs,
    write_keys,
)
from kvcluster.errors import ClusterUnavailable, InvalidRequest, KVError, Timeout
from kvcluster.rediscluster.core import (
    Space,
    deadline,
    full,
    packed_value,
    release,
    reserve,
    unknown_outcome,
)
from kvcluster.rediscluster.layout import Limits, Lock, Record, decode_record, decode_stored, record_tail, value_key
from kvcluster.rediscluster.locks import Undecided, blocker_of, read_through, resolve, write_each, write_through
from kvcluster.rediscluster.plans import Command, Plan, chunked
from kvcluster.rediscluster.registry import Registry
from kvcluster.rediscluster.scripts import REMOVE, WRITE
from kvcluster.rediscluster.slots import key_slot
from kvcluster.rediscluster.txn import across_slots
from kvcluster.scope import checked_scope
from kvcluster.values import unpack_value

__all__ = ["MAX_ATOMIC_KEYS", "consume_many", "delete_many", "get_many", "set_many"]

MAX_ATOMIC_KEYS: Final = 1 << 15  # keys of one all-or-nothing batch (as a local shard's part)
RESERVE_RETRIES: Final = 8  # tries of an all-or-nothing set_many whose new keys keep changing
READ_ROUNDS: Final = 64  # rounds of a one-slot all-or-nothing read that keeps meeting decided batches

# -- input -------------------------------------------------------------------------------


def _one_slot(stored: list[bytes]) -> bool:
    """Whether an all-or-nothing batch takes the one-script path; InvalidRequest when
    it is too large for one (a script blocks its node while it runs)."""
    if len(stored) > MAX_ATOMIC_KEYS:
        raise InvalidRequest(
            f"an all-or-nothing batch takes at most {MAX_ATOMIC_KEYS} keys on Redis Cluster; "
            "split it, or use BatchMode.BEST_EFFORT"
        )
    first = key_slot(stored[0])
    return all(key_slot(key) == first for key in stored)


# -- set_many ----------------------------------------------------------------------------


def set_many(registry: Registry, space: Space, items: Any, mode: Any, scope: Any) -> Plan[BatchResult]:
    keys, values = set_pairs(items)
    scope = checked_scope(scope)
    keys, raw = write_keys(keys)
    mode = checked_mode(mode)
    if not keys:
        return BatchResult(0, {})
    stored = [value_key(space.ns, key) for key in raw]
    one_slot = mode is BatchMode.ALL_OR_NOTHING and _one_slot(stored)
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
            raise batch_failed(keys, errors, "set_many")
        if one_slot:
            ts = yield from _set_atomically(space, limits, keys, stored, tails)
        else:
            ts = (yield from across_slots(space, limits, "set", keys, stored, tails)).ts
        return BatchResult(len(keys), dict.fromkeys(keys, ts))
    return (yield from _set_each(space, limits, keys, stored, tails, errors))


def _set_atomically(
    space: Space, limits: Limits, keys: list[Any], stored: list[bytes], tails: list[bytes]
) -> Plan[int]:
    until = deadline(space)
    if not limits.max_keys:
        ts, _created = yield from write_through(WRITE.call(stored, [-1, *tails]), stored, until)
        return int(ts)
    reserved = 0
    for _attempt in range(RESERVE_RETRIES):
        try:
            ts, absent = yield from write_through(WRITE.call(stored, [reserved, *tails]), stored, until)
        except KVError as exc:
            if not unknown_outcome(exc):
                yield from release(space, reserved)
            if isinstance(exc, Undecided):  # a lock that stayed: nothing was written
                raise batch_failed(keys, dict.fromkeys(range(len(keys)), exc), "set_many") from None
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
            raise batch_failed(keys, {i - 1: error for i in absent}, "set_many")
    yield from release(space, reserved)
    busy = ClusterUnavailable("other clients kept creating and deleting these keys; retry")
    raise batch_failed(keys, dict.fromkeys(range(len(keys)), busy), "set_many")


def _set_each(
    space: Space,
    limits: Limits,
    keys: list[Any],
    stored: list[bytes],
    tails: list[bytes],
    errors: dict[int, KVError],
) -> Plan[BatchResult]:
    data: list[Any] = [MISSING] * len(keys)
    pending = [i for i in range(len(keys)) if i not in errors]
    room = -1 if not limits.max_keys else 0  # counted: first write the keys that exist
    until = deadline(space)
    commands = [WRITE.call([stored[i]], [room, tails[i]]) for i in pending]
    outcomes = yield from write_each(commands, [stored[i] for i in pending], until)
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
        commands = [WRITE.call([stored[i]], [1, tails[i]]) for i in taken]
        outcomes = yield from write_each(commands, [stored[i] for i in taken], until)
        unused = 0
        for i, outcome in zip(taken, outcomes, strict=True):
            if isinstance(outcome, KVError):
                errors[i] = outcome
                unused += not unknown_outcome(outcome)
            else:
                data[i] = int(outcome[0])
                unused += not outcome[1]  # another client created it meanwhile
        yield from release(space, unused)
    return batch_result(keys, data, errors)


# -- get_many ----------------------------------------------------------------------------


def get_many(registry: Registry, space: Space, keys: Iterable[Any], mode: Any) -> Plan[BatchResult]:
    listed, raw = read_keys(keys)
    mode = checked_mode(mode)
    if not listed:
        return BatchResult(0, {})
    stored = [value_key(space.ns, key) for key in raw]
    one_slot = mode is BatchMode.ALL_OR_NOTHING and _one_slot(stored)
    yield from registry.limits(space.name)
    found: list[Record | KVError | None]
    if mode is BatchMode.BEST_EFFORT:
        raws = yield from chunked([Command(("GET", key)) for key in stored])
        found = yield from read_through(stored, raws)
    elif one_slot:
        found = yield from _read_one_slot(stored)
    else:
        found = yield from _read_across(stored, deadline(space))
    errors: dict[int, KVError] = {}
    data: list[Any] = [MISSING] * len(listed)
    for i, record in enumerate(found):
        if isinstance(record, KVError):
            errors[i] = record
        elif record is None:
            errors[i] = missing_key(listed[i])
        else:
            data[i] = unpack_value(record.packed)
    if errors and mode is BatchMode.ALL_OR_NOTHING:
        raise batch_failed(listed, errors, "get_many", "no data is returned")
    return batch_result(listed, data, errors)


def _read_one_slot(stored: list[bytes]) -> Plan[list[Record | KVError | None]]:
    """One MGET: one instant of one slot. A lock of an undecided batch reads as its old
    record — the batch was undecided after the MGET ran, so it had not committed when
    the MGET read. A decided batch is settled, and the MGET runs again."""
    for _round in range(READ_ROUNDS):
        (answer,) = yield [Command(("MGET", *stored))]
        if isinstance(answer, KVError):
            return [answer] * len(stored)
        found: list[Record | Lock | None] = [
            None if raw is None else decode_stored(raw, key) for key, raw in zip(stored, answer, strict=True)
        ]
        decided: dict[bytes, bool] = {}
        for key, record in zip(stored, found, strict=True):
            if isinstance(record, Lock) and record.txn_id not in decided:
                decided[record.txn_id] = yield from resolve(blocker_of(key, record), None)
        if not any(decided.values()):
            return [
                record.old_record(key) if isinstance(record, Lock) else record
                for key, record in zip(stored, found, strict=True)
            ]
    raise ClusterUnavailable("keys kept being locked by other clients' batches while this read ran; retry")


def _read_across(stored: list[bytes], until: float) -> Plan[list[Record | KVError | None]]:
    """Read several slots (one MGET per slot, pipelined) until two rounds in a row see
    the very same records and no lock: nothing changed any key between the rounds, so
    the records are every key's value at the moment the first round ended. A lock met
    is resolved, waiting for an undecided batch (until the deadline), and the rounds
    start over."""
    slots: dict[int, list[int]] = {}
    for i, key in enumerate(stored):
        slots.setdefault(key_slot(key), []).append(i)
    groups = list(slots.values())
    previous: list[Any] | None = None
    while True:
        answers = yield from chunked([Command(("MGET", *(stored[i] for i in group))) for group in groups])
        raws: list[Any] = [None] * len(stored)
        for group, answer in zip(groups, answers, strict=True):
            if isinstance(answer, KVError):
                return [answer] * len(stored)
            for i, raw in zip(group, answer, strict=True):
                raws[i] = raw
        found = [None if raw is None else decode_stored(raw, key) for key, raw in zip(stored, raws, strict=True)]
        locks = {
            record.txn_id: (key, record) for key, record in zip(stored, found, strict=True) if isinstance(record, Lock)
        }
        if locks:
            for key, lock in locks.values():
                yield from resolve(blocker_of(key, lock), until)
            previous = None
        elif raws == previous:
            return [record for record in found if not isinstance(record, Lock)]
        else:
            previous = raws
        if time.monotonic() > until:
            raise Timeout("get_many: the keys kept changing; no consistent view within the timeout, retry")


# -- delete_many, consume_many -------------------------------------------------------------


def delete_many(registry: Registry, space: Space, keys: Iterable[Any], mode: Any) -> Plan[BatchResult]:
    return _remove_many(registry, space, keys, mode, consume=False)


def consume_many(registry: Registry, space: Space, keys: Iterable[Any], mode: Any) -> Plan[BatchResult]:
    return _remove_many(registry, space, keys, mode, consume=True)


def _remove_many(registry: Registry, space: Space, keys: Iterable[Any], mode: Any, consume: bool) -> Plan[BatchResult]:
    listed, raw = write_keys(keys)
    mode = checked_mode(mode)
    what = "consume_many" if consume else "delete_many"
    if not listed:
        return BatchResult(0, {})
    stored = [value_key(space.ns, key) for key in raw]
    one_slot = mode is BatchMode.ALL_OR_NOTHING and _one_slot(stored)
    limits = yield from registry.limits(space.name)
    flags = ["1", "1" if consume else "0"]
    data: list[Any] = [MISSING] * len(listed)
    errors: dict[int, KVError] = {}
    if mode is BatchMode.ALL_OR_NOTHING and not one_slot:
        kind = "consume" if consume else "delete"
        outcome = yield from across_slots(space, limits, kind, listed, stored, [])
        for i, old in enumerate(outcome.olds):
            data[i] = unpack_value(decode_record(old, stored[i]).packed) if consume else outcome.ts
        return batch_result(listed, data, errors)  # (across_slots gave the counter back)
    if mode is BatchMode.ALL_OR_NOTHING:
        try:
            answer = yield from write_through(REMOVE.call(stored, flags), stored, deadline(space))
        except Undecided as exc:  # a lock that stayed: nothing was removed
            raise batch_failed(listed, dict.fromkeys(range(len(listed)), exc), what) from None
        if answer[0] < 0:
            raise batch_failed(listed, {i - 1: missing_key(listed[i - 1]) for i in answer[1]}, what)
        for i in range(len(listed)):
            data[i] = unpack_value(decode_record(answer[2][i], stored[i]).packed) if consume else int(answer[0])
        removed = len(listed)
    else:
        commands = [REMOVE.call([key], flags) for key in stored]
        outcomes = yield from write_each(commands, stored, deadline(space))
        removed = 0
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, KVError):
                errors[i] = outcome
            elif outcome[0] < 0:
                errors[i] = missing_key(listed[i])
            else:
                data[i] = unpack_value(decode_record(outcome[2][0], stored[i]).packed) if consume else int(outcome[0])
                removed += 1
    if limits.max_keys:
        yield from release(space, removed)
    return batch_result(listed, data, errors)
