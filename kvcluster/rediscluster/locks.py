"""Meeting a lock: what a read or a write does when a value key holds the lock of a
cross-slot batch (txn.py), as plans.

A lock names its batch's txn record. Whoever meets one reads that record and acts on
the batch's state (docs/redis-cluster.md, section 6, "Resolving a lock"):

- **committed**: roll the batch forward — every key it still locks gets its new
  record at the batch's timestamp — then delete the record; read or write again.
- **aborted, or no record**: roll the key(s) back to their old records; again.
- **pending, its time up** (by this client's clock, a hint): ask the primary node to
  abort it (ABORT decides by that node's clock: it may answer that the batch is still
  pending, or already committed), then as above.
- **pending**: a reader takes the lock's old record — the batch has not committed, so
  the read comes before it; a writer (or an all-or-nothing read of several slots)
  waits, backing off from 1 ms to 50 ms, until the batch is decided or its time is up,
  and raises Timeout past its deadline.

Rolling forward and back only touch keys still locked by that very batch, so any
number of clients may do it at once, and again: each step is idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from kvcluster.errors import ClusterUnavailable, KVError, Timeout
from kvcluster.rediscluster.layout import Lock, Record, TxnRecord, decode_stored, decode_txn
from kvcluster.rediscluster.lua import LOCKED_ANSWER
from kvcluster.rediscluster.plans import Command, Plan, chunked, pause, single
from kvcluster.rediscluster.slots import key_slot
from kvcluster.rediscluster.txn_scripts import ABORT, ROLLBACK, ROLLFORWARD

__all__ = [
    "ABORTED_KEPT_MS",
    "Blocker",
    "Undecided",
    "blocker_of",
    "by_slot",
    "met",
    "read_through",
    "resolve",
    "write_each",
    "write_through",
]

FIRST_BACKOFF: Final = 0.001  # seconds a writer first waits for an undecided batch
MAX_BACKOFF: Final = 0.05  # ... and at most, between two looks at its txn record
ABORTED_KEPT_MS: Final = 60_000  # ms an aborted txn record stays (then: no record, which reads the same)
READ_RETRIES: Final = 32  # times a read settles a decided batch and reads a key again


class Undecided(Timeout):
    """A write waited for another client's batch to be decided until its deadline:
    nothing was written (unlike a Timeout of a command, whose outcome is unknown)."""


class Blocker(NamedTuple):
    """A lock met on value key `stored`: its batch's txn record and id."""

    stored: bytes
    txn_key: bytes
    txn_id: bytes


def met(answer: Any, stored: Sequence[bytes]) -> Blocker | None:
    """The lock a write script met ({-2, i, txn key, txn id}: lua.py), or None."""
    if type(answer) is list and len(answer) >= 4 and answer[0] == LOCKED_ANSWER:
        return Blocker(stored[int(answer[1]) - 1], bytes(answer[2]), bytes(answer[3]))
    return None


def blocker_of(stored: bytes, lock: Lock) -> Blocker:
    return Blocker(stored, lock.txn_key, lock.txn_id)


def by_slot(keys: Sequence[bytes]) -> dict[int, list[bytes]]:
    """`keys` grouped by hash slot, each once, in order."""
    groups: dict[int, list[bytes]] = {}
    for key in dict.fromkeys(keys):
        groups.setdefault(key_slot(key), []).append(key)
    return groups


def _now_us() -> int:
    return time.time_ns() // 1000


def _txn(raw: Any, where: bytes) -> TxnRecord | None:
    return None if raw is None else decode_txn(raw, where)


def resolve(blocker: Blocker, deadline: float | None) -> Plan[bool]:
    """Settle the batch that holds `blocker`. True once it is decided and its locks are
    settled (the caller reads or writes again). An undecided batch: False at once with
    no deadline (a reader takes the lock's old record); with one, wait until it is
    decided or its time is up — Timeout past `deadline` (time.monotonic())."""
    delay = FIRST_BACKOFF
    while True:
        record = _txn((yield from single(Command(("GET", blocker.txn_key)))), blocker.txn_key)
        if record is not None and record.state == "pending" and _now_us() >= record.expires:
            answer = yield from single(
                ABORT.call([blocker.txn_key, *record.primary], [blocker.txn_id, "0", ABORTED_KEPT_MS])
            )
            record = _txn(answer, blocker.txn_key)
        if record is None or record.state != "pending":
            yield from _settle(blocker, record)
            return True
        if deadline is None:
            return False
        if time.monotonic() + delay > deadline:
            raise Undecided(
                f"Redis key {blocker.stored!r} is locked by a cross-slot batch still undecided "
                f"(txn {blocker.txn_id.decode(errors='replace')}); nothing was written, retry"
            )
        yield from pause(delay)
        delay = min(delay * 2, MAX_BACKOFF)


def _settle(blocker: Blocker, record: TxnRecord | None) -> Plan[None]:
    """Roll a decided batch's locks forward (committed) or back (aborted, or no record:
    a record is deleted only once none of its locks is left, so a lock without one
    belongs to an aborted batch)."""
    if record is not None and record.state == "committed":
        groups = by_slot([*record.keys, blocker.stored])
        args: list[Any] = [blocker.txn_id, record.ts]
        script = ROLLFORWARD
    else:
        groups = by_slot([*(record.keys if record is not None else ()), blocker.stored])
        args = [blocker.txn_id]
        script = ROLLBACK
    results = yield from chunked([script.call(keys, args) for keys in groups.values()])
    for result in results:
        if isinstance(result, KVError):
            raise result
    if script is ROLLFORWARD:  # every lock of the batch is gone: its record may go
        yield from single(Command(("DEL", blocker.txn_key)))


# -- writes ----------------------------------------------------------------------------


def write_through(command: Command, stored: Sequence[bytes], deadline: float) -> Plan[Any]:
    """Run a write script on `stored`; while it meets a lock, resolve the lock (waiting
    for an undecided batch until `deadline`) and run it again. Its answer."""
    while True:
        answer = yield from single(command)
        blocker = met(answer, stored)
        if blocker is None:
            return answer
        yield from resolve(blocker, deadline)


def write_each(commands: list[Command], stored: list[bytes], deadline: float) -> Plan[list[Any]]:
    """Run one-key write scripts (commands[i] on stored[i]), pipelined; those that met a
    lock run again once it is resolved. Each answer, or its KVError (Timeout for a key
    whose batch stayed undecided until `deadline`)."""
    results = yield from chunked(commands)
    while True:
        blocked: dict[bytes, list[tuple[int, Blocker]]] = {}  # by batch: each is resolved once
        for i, result in enumerate(results):
            blocker = met(result, [stored[i]])
            if blocker is not None:
                blocked.setdefault(blocker.txn_id, []).append((i, blocker))
        if not blocked:
            return results
        again: list[int] = []
        for locks in blocked.values():
            try:
                yield from resolve(locks[0][1], deadline)
            except Timeout as exc:
                for i, _blocker in locks:
                    results[i] = exc
                continue
            again.extend(i for i, _blocker in locks)
        answers = yield from chunked([commands[i] for i in again])
        for i, answer in zip(again, answers, strict=True):
            results[i] = answer


# -- reads -----------------------------------------------------------------------------


def read_through(stored: list[bytes], raws: list[Any]) -> Plan[list[Record | KVError | None]]:
    """The records of `stored` from their GET answers `raws`: a lock of an undecided
    batch reads as its old record (the batch has not committed: the read comes first);
    a decided batch is settled and the key read again. Each record, None (no key), or
    the KVError its GET raised."""
    results: list[Record | KVError | None] = [None] * len(stored)
    raws = list(raws)
    todo = list(range(len(stored)))
    for _attempt in range(READ_RETRIES):
        decided: dict[bytes, bool] = {}
        again: list[int] = []
        for i in todo:
            raw = raws[i]
            if raw is None or isinstance(raw, KVError):
                results[i] = raw
                continue
            found = decode_stored(raw, stored[i])
            if isinstance(found, Record):
                results[i] = found
                continue
            if found.txn_id not in decided:
                decided[found.txn_id] = yield from resolve(blocker_of(stored[i], found), None)
            if decided[found.txn_id]:
                again.append(i)
            else:
                results[i] = found.old_record(stored[i])
        if not again:
            return results
        answers = yield from chunked([Command(("GET", stored[i])) for i in again])
        for i, answer in zip(again, answers, strict=True):
            raws[i] = answer
        todo = again
    raise ClusterUnavailable("keys kept being locked by other clients' batches while this read ran; retry")
