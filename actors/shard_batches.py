"""A shard's batch operations: best-effort batches, single-shard atomic batches, and its
side of two-phase commit (prepare, commit, abort) with the key locks that come with it.

Every item is validated (keys, values, limits, existence) before anything is applied.
A best-effort batch applies what is valid as one journal record and reports the rest;
an atomic batch or a prepare applies (or journals) everything or nothing. A prepared
transaction locks its keys: another atomic batch or prepare touching them is refused
at once ("conflict": retry), so transactions never wait for each other and cannot
deadlock; single-key operations and best-effort batches wait for the decision.

Mixed into `ShardState`.
"""

from __future__ import annotations

import collections
import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgpack

from kvcluster.actors.quota import Admission, QuotaLedger
from kvcluster.codec import DEFAULT_MAX_MESSAGE
from kvcluster.errors import ClusterUnavailable, InvalidRequest, KeyNotFound, KVError, NamespaceFull, StorageError
from kvcluster.failpoints import failpoint
from kvcluster.journal.batches import ScopedChange
from kvcluster.keys import MAX_KEY_BYTES
from kvcluster.scope import Scope
from kvcluster.values import unpack_value

if TYPE_CHECKING:
    from kvcluster.actors.shard_state import NamespaceLimits
    from kvcluster.journal import VersionedStore

__all__ = ["CONFLICT", "KINDS", "PARKED", "BatchHandlers", "Transaction"]

KINDS: Final = frozenset({"set", "delete", "consume"})
ITEM_OVERHEAD: Final = 16  # bytes of framing per item in a reply, at most
MAX_BATCH: Final = 100_000  # items in one request
CONFLICT: Final = "conflict: a key is held by another transaction in progress; retry"
REPLY_SLACK: Final = 4096  # bytes a reply needs beside its values
PARKED: Final[bytes] = b""  # a handler's result: the request waits for namespace quota
_decode: Final = functools.partial(msgpack.unpackb, strict_map_key=False)
_SCOPES: Final = {int(Scope.PERMANENT): Scope.PERMANENT, int(Scope.EPHEMERAL): Scope.EPHEMERAL}


@dataclass
class Transaction:
    """A transaction prepared here: the keys it locks and the quota it reserved."""

    ns: bytes
    keys: list[bytes]
    reserved: int
    deadline: int  # µs since the epoch
    recovered: bool = False  # found prepared in the journal at start: its outcome may be known


def error_entry(error: KVError) -> list[str]:
    return [error.code, str(error)]


class BatchHandlers:
    # Provided by ShardState.
    store: VersionedStore
    quotas: QuotaLedger
    locks: dict[bytes, dict[bytes, bytes]]
    transactions: dict[bytes, Transaction]
    reply_budget: int = DEFAULT_MAX_MESSAGE - REPLY_SLACK  # bytes of values one reply may carry

    if TYPE_CHECKING:

        def namespace(self, ns: Any) -> tuple[bytes, NamespaceLimits]: ...
        def _value(self, value: Any, limits: NamespaceLimits) -> bytes: ...

    # -- best effort ---------------------------------------------------------------

    def _mget(self, args: list[Any]) -> Any:
        """[cut, rows]: `cut` is a timestamp newer than every value read and older than
        every later write here. A client reading from several shards compares the cuts
        with the values' timestamps to know its reads form one consistent view."""
        ns, keys = self._ns_keys(args, 2)
        found = self.store.get_many_raw(ns, keys)  # a (value, ts) tuple travels as an array
        size = sum([len(row[0]) for row in found if row is not None]) + ITEM_OVERHEAD * len(found)
        if size > self.reply_budget:  # as many as one reply can carry (at least one); the client asks again
            room = self.reply_budget
            for count, row in enumerate(found):
                if row is not None:
                    room -= len(row[0]) + ITEM_OVERHEAD
                    if room < 0 and count:
                        found = found[:count]
                        break
        return [self.store.next_timestamp(), found]

    def _mset(self, args: list[Any]) -> Any:
        ns, limits, items, scope = self._ns_items(args)
        errors: dict[bytes, list[str]] = {}
        valid = self._valid_sets(items, limits, errors)
        new = [key for key, _value in valid if self.store.get_raw(ns, key) is None] if limits.max_keys else []
        if new:
            admission = self.quotas.admit(ns, len(new))
            if admission is Admission.WAIT:
                return PARKED
            if admission is Admission.FULL:  # as many new keys as fit; the rest are refused
                refused = set(new[self.quotas.room(ns) :])
                full = error_entry(NamespaceFull(f"namespace {ns.decode()!r} holds its max_keys={limits.max_keys}"))
                errors.update((key, full) for key in refused)
                valid = [(key, value) for key, value in valid if key not in refused]
        ts = self.store.set_many_raw(ns, valid, scope) if valid else None
        return {"ts": ts, "errors": errors}

    def _mdelete(self, args: list[Any]) -> Any:
        return self._remove_many(args, consume=False)

    def _mconsume(self, args: list[Any]) -> Any:
        return self._remove_many(args, consume=True)

    def _remove_many(self, args: list[Any], consume: bool) -> Any:
        ns, keys = self._ns_keys(args, 2)
        errors: dict[bytes, list[str]] = {}
        values: dict[bytes, bytes] = {}
        for key in keys:
            found = self.store.get_raw(ns, key)
            if found is None:
                errors[key] = error_entry(KeyNotFound(f"key {key.decode(errors='replace')!r} does not exist"))
            else:
                values[key] = found[0]
        if consume:
            self._check_reply_size(values)
        ts = self.store.batch_raw(ns, [(key, None, Scope.PERMANENT) for key in values]) if values else None
        self.quotas.deleted(ns)
        result: dict[str, Any] = {"ts": ts, "errors": errors}
        if consume:
            result["values"] = values
        return result

    # -- all or nothing --------------------------------------------------------------

    def _atomic(self, args: list[Any]) -> Any:
        if len(args) != 4:
            raise InvalidRequest("ATOMIC takes [namespace, kind, items, scope]")
        plan = self._plan(args[0], args[1], args[2], args[3])
        if isinstance(plan, dict):
            return plan  # refused: {ok: False, errors}
        ns, changes, values, new = plan
        refused = self._admit(ns, changes, new)
        if refused is not None:
            return refused
        ts = self.store.batch_raw(ns, changes)
        self.quotas.deleted(ns)  # removals give their slots back, when shrinking
        return {"ok": True, "ts": ts, "values": values, "errors": {}}

    def _admit(self, ns: bytes, changes: list[Any], new: int) -> Any:
        """None when `new` more keys fit now; else PARKED (ask for quota) or the refusal."""
        if not new:
            return None
        admission = self.quotas.admit(ns, new)
        if admission is Admission.WAIT:
            return PARKED
        if admission is Admission.FULL:
            return self._full(ns, changes)
        return None

    def _txn_prepare(self, args: list[Any]) -> Any:
        if len(args) != 6:
            raise InvalidRequest("TXN_PREPARE takes [namespace, txn, deadline, kind, items, scope]")
        txn, deadline = args[1], args[2]
        if type(txn) is not bytes or not 0 < len(txn) <= 64 or type(deadline) is not int:
            raise InvalidRequest("a transaction id is 1..64 bytes and its deadline an integer")
        if txn in self.transactions:
            raise InvalidRequest(f"transaction {txn.hex()} is already prepared here")
        if deadline <= time.time_ns() // 1000:  # the coordinator would refuse to commit it
            raise ClusterUnavailable(f"transaction {txn.hex()} reached its deadline before it was prepared")
        plan = self._plan(args[0], args[3], args[4], args[5])
        if isinstance(plan, dict):
            return plan
        ns, changes, values, new = plan
        refused = self._admit(ns, changes, new)
        if refused is not None:
            return refused
        if new:
            self.quotas.reserve(ns, new)
        failpoint("shard.txn_prepare")
        ts = self.store.prepare_raw(ns, txn, deadline, changes)
        self._lock(txn, ns, [key for key, _value, _scope in changes], new, deadline)
        failpoint("shard.txn_prepared")
        return {"ok": True, "ts": ts, "values": values, "errors": {}}

    def commit(self, txn: bytes, ts: int) -> None:
        """Apply a prepared transaction (again: a repeated COMMIT is a no-op)."""
        transaction = self.transactions.get(txn)
        if transaction is None:
            return
        failpoint("shard.txn_commit")
        self.store.commit_raw(txn, ts)
        self._unlock(txn, transaction)
        failpoint("shard.txn_committed")
        self.quotas.deleted(transaction.ns)  # removals give their slots back, when shrinking

    def abort(self, txn: bytes) -> None:
        """Drop a prepared transaction (a repeated ABORT is a no-op)."""
        transaction = self.transactions.get(txn)
        if transaction is None:
            return
        self.store.abort_raw(txn)
        self._unlock(txn, transaction)

    def adopt_prepared(self) -> None:
        """Lock the keys of transactions the journal still holds prepared (after a restart)."""
        for txn, prepared in self.store.prepared.items():
            keys = [key for key, _value, _scope in prepared.changes]
            new = sum(
                1 for key, value, _scope in prepared.changes if value and not self.store.get_raw(prepared.ns, key)
            )
            self.quotas.reserve(prepared.ns, new)
            self._lock(txn, prepared.ns, keys, new, prepared.deadline, recovered=True)

    def transaction_in(self, ns: Any) -> bytes | None:
        """A transaction prepared here on namespace `ns`, if any (a scan waits for it)."""
        for txn, transaction in self.transactions.items():
            if transaction.ns == ns:
                return txn
        return None

    # -- helpers ---------------------------------------------------------------------

    def _plan(
        self, ns_arg: Any, kind: Any, items: Any, scope_code: Any
    ) -> tuple[bytes, list[ScopedChange], dict[bytes, bytes], int] | dict[str, Any]:
        """Validate an all-or-nothing batch: (ns, changes, consumed values, new keys), or
        {ok: False, errors} saying why not."""
        ns, limits = self.namespace(ns_arg)
        if type(kind) is not str or kind not in KINDS:  # (a list would not even hash)
            raise InvalidRequest(f"batch kind must be one of {sorted(KINDS)}, not {kind!r}")
        scope = self._scope(scope_code)
        errors: dict[bytes, list[str]] = {}
        if kind == "set":
            pairs = self._pairs(items)
            valid = self._valid_sets(pairs, limits, errors)
            changes: list[ScopedChange] = [(key, value, scope) for key, value in valid]
            keys = [key for key, _value in pairs]
        else:
            keys = self._keys(items)
            changes = [(key, None, Scope.PERMANENT) for key in keys]
        held = self.locks.get(ns)
        if held and not held.keys().isdisjoint(keys):
            conflict = error_entry(ClusterUnavailable(CONFLICT))
            errors.update((key, conflict) for key in keys if key in held)
        values: dict[bytes, bytes] = {}
        new = 0
        for key, value, _scope in changes if kind != "set" or limits.max_keys else ():
            found = self.store.get_raw(ns, key)
            if value is None and found is None and key not in errors:
                errors[key] = error_entry(KeyNotFound(f"key {key.decode(errors='replace')!r} does not exist"))
            elif value is None and found is not None and kind == "consume":
                values[key] = found[0]
            elif value is not None and found is None and limits.max_keys:
                new += 1
        if errors:
            return {"ok": False, "errors": errors}
        self._check_reply_size(values)
        return ns, changes, values, new

    def _check_reply_size(self, values: dict[bytes, bytes]) -> None:
        size = sum(len(key) + len(value) + ITEM_OVERHEAD for key, value in values.items())
        if size > self.reply_budget:
            raise InvalidRequest(f"the values consumed would fill {size} bytes, more than one reply carries")

    def _full(self, ns: bytes, changes: list[ScopedChange]) -> dict[str, Any]:
        full = error_entry(NamespaceFull(f"namespace {ns.decode()!r} has no room for these new keys"))
        new = [key for key, value, _scope in changes if value is not None and self.store.get_raw(ns, key) is None]
        return {"ok": False, "errors": dict.fromkeys(new, full)}

    def _lock(
        self, txn: bytes, ns: bytes, keys: list[bytes], reserved: int, deadline: int, recovered: bool = False
    ) -> None:
        self.transactions[txn] = Transaction(ns, keys, reserved, deadline, recovered)
        held = self.locks.get(ns)
        if held is None:
            held = self.locks[ns] = {}
        held.update(dict.fromkeys(keys, txn))

    def _unlock(self, txn: bytes, transaction: Transaction) -> None:
        del self.transactions[txn]
        held = self.locks[transaction.ns]
        collections.deque(map(held.pop, transaction.keys), maxlen=0)  # its keys: no other holds them
        if not held:
            del self.locks[transaction.ns]
        self.quotas.unreserve(transaction.ns, transaction.reserved)

    def _valid_sets(
        self, pairs: list[tuple[bytes, Any]], limits: NamespaceLimits, errors: dict[bytes, list[str]]
    ) -> list[tuple[bytes, bytes]]:
        limit = limits.max_value_bytes
        values = [value for _key, value in pairs]
        try:  # the common case, checked in bulk (C loops): every value valid
            if set(map(type, values)) == {bytes}:
                lengths = list(map(len, values))
                if min(lengths) > 0 and (not limit or max(lengths) <= limit):
                    collections.deque(map(_decode, values), maxlen=0)  # each one complete msgpack object
                    return pairs
        except (ValueError, TypeError):
            pass  # one is not: find which, one by one
        valid: list[tuple[bytes, bytes]] = []
        append = valid.append
        for key, value in pairs:
            if type(value) is bytes and value and (not limit or len(value) <= limit):
                try:
                    unpack_value(value)  # one complete msgpack object, or readers would choke on it
                    append((key, value))
                    continue
                except StorageError:
                    pass
            try:
                self._value(value, limits)  # says what is wrong with it
            except KVError as exc:
                errors[key] = error_entry(exc)
        return valid

    def _ns_keys(self, args: list[Any], arity: int) -> tuple[bytes, list[bytes]]:
        if len(args) != arity:
            raise InvalidRequest(f"expected {arity} arguments, got {len(args)}")
        ns, _limits = self.namespace(args[0])
        return ns, self._keys(args[1])

    def _ns_items(self, args: list[Any]) -> tuple[bytes, NamespaceLimits, list[tuple[bytes, Any]], Scope]:
        if len(args) != 3:
            raise InvalidRequest("expected [namespace, items, scope]")
        ns, limits = self.namespace(args[0])
        return ns, limits, self._pairs(args[1]), self._scope(args[2])

    @staticmethod
    def _keys(items: Any) -> list[bytes]:
        # Checked with builtins over the whole list (C loops): a batch is checked in bulk.
        if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
            raise InvalidRequest(f"a batch holds 1..{MAX_BATCH} keys")
        if set(map(type, items)) != {bytes}:
            raise InvalidRequest("keys are bytes")
        lengths = list(map(len, items))
        if min(lengths) < 1 or max(lengths) > MAX_KEY_BYTES:
            raise InvalidRequest(f"keys are 1..{MAX_KEY_BYTES} bytes")
        if len(set(items)) != len(items):
            raise InvalidRequest("a batch names each key once")
        return items

    @classmethod
    def _pairs(cls, items: Any) -> list[tuple[bytes, Any]]:
        if not isinstance(items, list) or not items or set(map(type, items)) != {list}:
            raise InvalidRequest("batch items are [key, value] pairs")
        if set(map(len, items)) != {2}:
            raise InvalidRequest("batch items are [key, value] pairs")
        keys = cls._keys([item[0] for item in items])
        return list(zip(keys, [item[1] for item in items], strict=True))

    @staticmethod
    def _scope(code: Any) -> Scope:
        """The scope a request names. (Its type first: a hostile map or list as a scope
        would make the lookup raise TypeError, which no handler expects.)"""
        scope = _SCOPES.get(code) if type(code) is int else None
        if scope is None:
            raise InvalidRequest(f"unknown scope {code!r}")
        return scope
