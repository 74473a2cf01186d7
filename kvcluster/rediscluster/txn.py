"""All-or-nothing batches over several hash slots on a Redis Cluster, as a plan.

Redis runs a script atomically only on the keys of one slot, so a batch over several
is a commit protocol the client coordinates (Percolator's, in small), in which every
decision is one script on one slot, by that node's clock (txn_scripts.py; the
argument for each step: docs/redis-cluster.md, section 6):

1. **Prepare the primary group** — the batch's keys in the slot of its first key —
   with PREPARE: it checks them, creates the batch's txn record there (pending,
   expires = that node's time + TTL, every key listed) and turns each key into a
   lock holding its old record and its new one. Then **prepare every other group**
   (one pipelined step, one round trip per node).
2. **Commit** with COMMIT on the primary slot: while the record is pending and its
   time is not up, the batch commits at one timestamp above every old one; the
   primary group gets its new records in the same script. This is the moment the
   batch applies. Past its time (the client was slow or paused), or once another
   client aborted it, it is aborted instead, and nothing applies.
3. **Roll forward** the other groups (ROLLFORWARD), then delete the txn record.

A failure before the commit rolls back what was prepared (ROLLBACK; ABORT for the
primary group) and raises BatchFailed. A client that dies leaves locks that whoever
meets them resolves from the txn record (locks.py).
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Final, NamedTuple

from kvcluster.batch_common import batch_failed, missing_key
from kvcluster.errors import BatchFailed, ClusterUnavailable, KVError, StorageError, Timeout
from kvcluster.failpoints import failpoint
from kvcluster.rediscluster.core import Space, deadline, full, reserve, unknown_outcome
from kvcluster.rediscluster.layout import Limits, counter_key, decode_txn, txn_key
from kvcluster.rediscluster.locks import ABORTED_KEPT_MS, Blocker, resolve
from kvcluster.rediscluster.lua import LOCKED_ANSWER
from kvcluster.rediscluster.plans import Command, Plan, chunked
from kvcluster.rediscluster.slots import key_slot, slot_tag
from kvcluster.rediscluster.txn_scripts import ABORT, COMMIT, DONE, FULL, MISSING, PREPARE, ROLLBACK, ROLLFORWARD

__all__ = ["CONFLICT", "MIN_TTL", "TTL_TIMEOUTS", "Outcome", "across_slots", "ttl"]

TTL_TIMEOUTS: Final = 2.0  # a batch has twice its client's timeout from prepare to commit ...
MIN_TTL = 5.0  # ... and at least this many seconds (tests lower it)
RETRIES: Final = 8  # rounds of preparing a group whose keys keep changing (a lock resolved, room reserved)
CONFLICT: Final = "conflict: a key is held by another transaction in progress; retry"  # the local engine's words


def ttl(timeout: float) -> float:
    """Seconds a batch has from its prepare to its commit, by the primary node's clock."""
    return max(TTL_TIMEOUTS * timeout, MIN_TTL)


class Outcome(NamedTuple):
    """A committed batch: its timestamp, and for consume_many each key's old record."""

    ts: int
    olds: list[bytes | None]


def across_slots(
    space: Space, limits: Limits, kind: str, keys: list[Any], stored: list[bytes], tails: list[bytes]
) -> Plan[Outcome]:
    """Apply an all-or-nothing batch over several slots: `kind` is set (tails[i]: the
    scope byte and value of keys[i]), delete or consume. Its Outcome; BatchFailed when
    nothing applied; Timeout or ClusterUnavailable (not BatchFailed) only when the
    outcome could not be learned."""
    batch = _Batch(space, limits, kind, keys, stored, tails)
    return (yield from batch.run())


class _Batch:
    """One cross-slot batch in flight: its groups, its txn record, what is locked."""

    def __init__(
        self, space: Space, limits: Limits, kind: str, keys: list[Any], stored: list[bytes], tails: list[bytes]
    ) -> None:
        self.space, self.limits, self.kind = space, limits, kind
        self.keys, self.stored, self.tails = keys, stored, tails
        self.what = f"{kind}_many"
        self.groups = _groups(stored)
        self.id = secrets.token_hex(8).encode()
        self.txn = txn_key(slot_tag(key_slot(stored[0])), self.id)
        self.deadline = deadline(space)
        self.counted = kind == "set" and limits.max_keys > 0
        self.reserved = 0  # room taken on the key counter
        self.allowed = [0] * len(self.groups)  # keys each group may create (counted)
        self.created = 0
        self.newest = 0  # the newest old timestamp of every key
        self.olds: list[bytes | None] = [None] * len(keys)
        self.prepared: list[int] = []  # groups locked, or that may be (no answer came)

    # -- the protocol, top to bottom ---------------------------------------------------

    def run(self) -> Plan[Outcome]:
        try:
            yield from self._prepare_primary()
            yield from self._prepare_others()
        except KVError:  # (each refusal above aborted already; this is for the unexpected)
            yield from self._abort()
            raise
        failpoint("redis.txn.prepared")
        ts = yield from self._commit()  # from here on, never roll back unless told "aborted"
        failpoint("redis.txn.committed")
        yield from self._roll_forward(ts)
        return Outcome(ts, self.olds)

    def _prepare_primary(self) -> Plan[None]:
        """Lock the primary group and create the txn record. Nothing is locked yet, so
        a lock met here is waited for (until the deadline) as by any writer."""
        members = self.groups[0]
        short = 0
        while short < RETRIES:
            if time.monotonic() > self.deadline:
                yield from self._abort()
                busy = Timeout("other clients' batches kept locking these keys until the timeout; retry")
                raise self._failed(dict.fromkeys(range(len(self.keys)), busy))
            (answer,) = yield [self._prepare(0)]
            if isinstance(answer, KVError):
                if unknown_outcome(answer):
                    self.prepared.append(0)  # it may have run: the abort below undoes it
                yield from self._abort()
                raise self._failed(dict.fromkeys(range(len(self.keys)), answer))
            code = answer[0]
            if code == DONE:
                self._took(0, answer)
                return
            if code == LOCKED_ANSWER:
                blocker = Blocker(self.stored[members[int(answer[1]) - 1]], bytes(answer[2]), bytes(answer[3]))
                try:
                    yield from resolve(blocker, self.deadline)
                except Timeout as exc:
                    yield from self._abort()
                    raise self._failed({members[j - 1]: exc for j in answer[4]}) from None
            elif code == FULL:
                short += 1
                yield from self._make_room(0, answer[1])
            elif code == MISSING:
                errors: dict[int, KVError] = {members[j - 1]: missing_key(self.keys[members[j - 1]]) for j in answer[1]}
                errors.update((yield from self._missing_elsewhere()))
                yield from self._abort()
                raise self._failed(errors)
            else:
                yield from self._abort()
                raise StorageError(f"{self.what}: unexpected answer to PREPARE: {answer!r}")
        yield from self._abort()
        raise self._failed(dict.fromkeys(range(len(self.keys)), _busy()))

    def _prepare_others(self) -> Plan[None]:
        """Lock every other group, one pipelined step. A lock of an undecided batch met
        here is a conflict: this batch holds locks now, so it does not wait (two
        batches waiting on each other would wait until their time is up)."""
        pending = list(range(1, len(self.groups)))
        for _attempt in range(RETRIES):
            if not pending:
                return
            answers = yield [self._prepare(g) for g in pending]
            errors: dict[int, KVError] = {}
            blocked: list[tuple[int, Any]] = []
            short: list[tuple[int, list[int]]] = []
            for g, answer in zip(pending, answers, strict=True):
                members = self.groups[g]
                if isinstance(answer, KVError):
                    if unknown_outcome(answer):
                        self.prepared.append(g)
                    errors.update(dict.fromkeys(members, answer))
                elif answer[0] == DONE:
                    self._took(g, answer)
                elif answer[0] == LOCKED_ANSWER:
                    blocked.append((g, answer))
                elif answer[0] == FULL:
                    short.append((g, answer[1]))
                elif answer[0] == MISSING:
                    errors.update((members[j - 1], missing_key(self.keys[members[j - 1]])) for j in answer[1])
                else:
                    errors.update(dict.fromkeys(members, StorageError(f"unexpected answer to PREPARE: {answer!r}")))
            pending = []
            for g, answer in blocked if not errors else ():
                members = self.groups[g]
                blocker = Blocker(self.stored[members[int(answer[1]) - 1]], bytes(answer[2]), bytes(answer[3]))
                if (yield from resolve(blocker, None)):  # it was decided: the key is free now
                    pending.append(g)
                else:
                    errors.update((members[j - 1], ClusterUnavailable(CONFLICT)) for j in answer[4])
            for g, absent in short if not errors else ():
                if (yield from self._reserve(g, absent)):
                    pending.append(g)
                else:
                    error = full(self.space, self.limits)
                    errors.update((self.groups[g][j - 1], error) for j in absent)
            if errors:
                yield from self._abort()
                raise self._failed(errors)
        if pending:
            yield from self._abort()
            raise self._failed(dict.fromkeys(range(len(self.keys)), _busy()))

    def _commit(self) -> Plan[int]:
        """The decision, on the primary slot. The batch's timestamp; BatchFailed when
        it was aborted (its time was up)."""
        (answer,) = yield [COMMIT.call(self._primary_keys(), [self.id, self.newest, ABORTED_KEPT_MS])]
        if isinstance(answer, KVError):  # no answer: did it commit? Abort it, and hear
            return (yield from self._learn(answer))
        if int(answer[0]) < 0:
            yield from self._abort()
            expired = Timeout(
                f"the batch's transaction was aborted before it committed: its {ttl(self.space.timeout):g} s "
                "were up (the client was too slow, or paused)"
            )
            raise self._failed(dict.fromkeys(range(len(self.keys)), expired))
        return int(answer[0])

    def _learn(self, error: KVError) -> Plan[int]:
        """COMMIT got no answer: abort the batch unless it committed. ABORT answers the
        record as it is afterwards, so the outcome is known either way — unless ABORT
        gets no answer either: then `error` is raised, the outcome unknown."""
        (answer,) = yield [ABORT.call(self._primary_keys(), [self.id, "1", ABORTED_KEPT_MS])]
        if isinstance(answer, KVError):
            raise error
        record = None if answer is None else decode_txn(answer, self.txn)
        if record is not None and record.state == "committed":
            return record.ts
        yield from self._abort()
        raise self._failed(dict.fromkeys(range(len(self.keys)), error))

    def _roll_forward(self, ts: int) -> Plan[None]:
        """The batch committed: the other groups get their new records, then the txn
        record goes (only once no lock of the batch is left: a reader that finds a lock
        and no record rolls it back). A group that fails is left to whoever meets it."""
        others = [self._value_keys(g) for g in self.prepared if g != 0]
        results = yield from chunked([ROLLFORWARD.call(keys, [self.id, ts]) for keys in others])
        if not any(isinstance(result, KVError) for result in results):
            yield [Command(("DEL", self.txn))]
        if self.counted:
            yield from self._release(self.reserved - self.created)
        elif self.limits.max_keys:
            yield from self._release(len(self.keys))  # delete, consume: every key existed

    # -- helpers -----------------------------------------------------------------------

    def _value_keys(self, g: int) -> list[bytes]:
        return [self.stored[i] for i in self.groups[g]]

    def _primary_keys(self) -> list[bytes]:
        return [self.txn, *self._value_keys(0)]

    def _prepare(self, g: int) -> Command:
        max_new = self.allowed[g] if self.counted else -1
        tails = [self.tails[i] for i in self.groups[g]] if self.kind == "set" else []
        if g:
            return PREPARE.call(self._value_keys(g), [self.id, self.txn, self.kind, max_new, 0, 0, *tails])
        others = [self.stored[i] for members in self.groups[1:] for i in members]
        ttl_us = int(ttl(self.space.timeout) * 1_000_000)
        return PREPARE.call(
            self._primary_keys(), [self.id, self.txn, self.kind, max_new, ttl_us, len(others), *others, *tails]
        )

    def _took(self, g: int, answer: list[Any]) -> None:
        """Group g is locked: note its newest old timestamp, its new keys, its old records."""
        self.prepared.append(g)
        self.newest = max(self.newest, int(answer[1]))
        self.created += len(answer[2])
        if self.kind == "consume":
            for i, old in zip(self.groups[g], answer[3], strict=True):
                self.olds[i] = old

    def _make_room(self, g: int, absent: list[int]) -> Plan[None]:
        if not (yield from self._reserve(g, absent)):
            yield from self._abort()
            error = full(self.space, self.limits)
            raise self._failed({self.groups[g][j - 1]: error for j in absent})

    def _reserve(self, g: int, absent: list[int]) -> Plan[bool]:
        """Room on the key counter for group g's new keys; False if the namespace is full."""
        need = len(absent) - self.allowed[g]
        granted = yield from reserve(self.space, self.limits, need)
        self.reserved += granted
        self.allowed[g] += granted
        return granted >= need

    def _missing_elsewhere(self) -> Plan[dict[int, KVError]]:
        """Which keys of the other groups are missing too (EXISTS: only to report them
        all, as the local engine does; nothing is decided by it)."""
        others = [i for members in self.groups[1:] for i in members]
        answers = yield from chunked([Command(("EXISTS", self.stored[i])) for i in others])
        return {i: missing_key(self.keys[i]) for i, answer in zip(others, answers, strict=True) if answer == 0}

    def _abort(self) -> Plan[None]:
        """Give up before the commit: the txn record aborted (its primary group's old
        records back), every other group prepared rolled back, the room given back. A
        command that fails here leaves locks that their readers roll back."""
        step = [ROLLBACK.call(self._value_keys(g), [self.id]) for g in self.prepared if g != 0]
        if 0 in self.prepared:
            step.append(ABORT.call(self._primary_keys(), [self.id, "1", ABORTED_KEPT_MS]))
        if step:
            yield step
        self.prepared = []
        yield from self._release(self.reserved)
        self.reserved = 0

    def _release(self, count: int) -> Plan[None]:
        """Give back room; a failure leaves the counter too high, which is safe."""
        if count > 0:
            yield [Command(("DECRBY", counter_key(self.space.ns), count))]

    def _failed(self, errors: dict[int, KVError]) -> BatchFailed:
        return batch_failed(self.keys, errors, self.what)


def _groups(stored: list[bytes]) -> list[list[int]]:
    """The batch's indices grouped by slot, the first key's slot first, in input order."""
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(stored):
        groups.setdefault(key_slot(key), []).append(i)
    return list(groups.values())


def _busy() -> ClusterUnavailable:
    return ClusterUnavailable("other clients kept locking or creating these keys; nothing was applied, retry")
