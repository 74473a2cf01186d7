"""What a shard does with one request, apart from sockets: the shard's state machine.

`ShardState.handle` takes a decoded request and returns its reply payload, or
`PARKED` when the request must wait for namespace quota from the coordinator. It
enforces namespace limits, validates every argument (the shard never trusts its
peer), and keeps the paged scans and the per-namespace key quotas.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from kvcluster.actors.quota import Admission, QuotaLedger, QuotaReport
from kvcluster.actors.shard_batches import PARKED, BatchHandlers, Transaction
from kvcluster.codec import Op, Request, encode_error, encode_reply
from kvcluster.errors import (
    ClusterUnavailable,
    InvalidRequest,
    KeyNotFound,
    KVError,
    NamespaceFull,
    NamespaceNotFound,
    StorageError,
    ValueTooLarge,
)
from kvcluster.journal import VersionedStore
from kvcluster.journal.format import MAX_TIMESTAMP
from kvcluster.keys import MAX_KEY_BYTES, MAX_NAMESPACE_BYTES
from kvcluster.scope import Scope
from kvcluster.values import unpack_value

__all__ = ["PARKED", "NamespaceLimits", "ShardState"]

_ANY_EPOCH: Final = frozenset({Op.PING, Op.SHARD_STATS, Op.TXN_COMMIT, Op.TXN_ABORT})  # not routed by key
SCAN_PAGE_BYTES: Final = 1 << 20
SCAN_PAGE_KEYS: Final = 1000
SCAN_IDLE_SECONDS: Final = 60.0
MAX_OPEN_SCANS: Final = 256


@dataclass(frozen=True)
class NamespaceLimits:
    max_keys: int = 0  # 0: no limit
    max_value_bytes: int = 0  # 0: no limit beyond the journal's own


@dataclass
class _Scan:
    keys: list[bytes]
    position: int = 0
    last_used: float = field(default_factory=time.monotonic)


def _bytes_arg(value: Any, what: str, limit: int) -> bytes:
    if type(value) is not bytes or not 0 < len(value) <= limit:
        raise InvalidRequest(f"{what} must be 1..{limit} bytes")
    return value


class ShardState(BatchHandlers):
    """One shard's store, namespaces, quotas and scans; answers requests one at a time."""

    def __init__(self, shard: int, store: VersionedStore, epoch: int, ask_quota: Callable[[bytes, int], None]):
        self.shard = shard
        self.store = store
        self.epoch = epoch
        self.namespaces: dict[bytes, NamespaceLimits] = {}
        self.quotas = QuotaLedger(store.count_raw, ask_quota)
        self.locks: dict[bytes, dict[bytes, bytes]] = {}  # {ns: {key: txn}}: held by prepared transactions
        self.transactions: dict[bytes, Transaction] = {}
        self.scans: OrderedDict[int, _Scan] = OrderedDict()
        self.waiting: Callable[[], int] = lambda: 0  # requests waiting on locks (the shard process's)
        self._next_scan = 1
        self.ops_total = 0
        self._handlers: dict[Op, Callable[[list[Any]], Any]] = {
            Op.PING: self._ping,
            Op.GET: self._get,
            Op.SET: self._set,
            Op.UPDATE: self._update,
            Op.EXISTS: self._exists,
            Op.CONSUME: self._consume,
            Op.DELETE: self._delete,
            Op.COUNT: self._count,
            Op.SCAN: self._scan,
            Op.SHARD_STATS: self._stats,
            Op.MGET: self._mget,
            Op.MSET: self._mset,
            Op.MDELETE: self._mdelete,
            Op.MCONSUME: self._mconsume,
            Op.ATOMIC: self._atomic,
            Op.TXN_PREPARE: self._txn_prepare,
            Op.TXN_COMMIT: self._txn_commit,
            Op.TXN_ABORT: self._txn_abort,
        }
        self.adopt_prepared()

    # -- dispatch ------------------------------------------------------------------

    def handle(self, request: Request) -> bytes:
        """The reply payload for `request`, or PARKED (it waits for namespace quota)."""
        self.ops_total += 1
        handler = self._handlers.get(request.op)
        try:
            if handler is None:
                raise InvalidRequest(f"operation {request.op.name} is not served by a shard")
            if request.epoch != self.epoch and request.op not in _ANY_EPOCH:
                raise ClusterUnavailable(f"stale_epoch: routed with epoch {request.epoch}, shard is at {self.epoch}")
            result = handler(request.args)
        except KVError as exc:
            return encode_error(request.seq, exc)
        return PARKED if result is PARKED else encode_reply(request.seq, result)

    def namespace(self, ns: Any) -> tuple[bytes, NamespaceLimits]:
        ns = _bytes_arg(ns, "a namespace", MAX_NAMESPACE_BYTES)
        limits = self.namespaces.get(ns)
        if limits is None:
            raise NamespaceNotFound(f"namespace {ns.decode(errors='replace')!r} does not exist")
        return ns, limits

    # -- data operations -----------------------------------------------------------

    def _ping(self, args: list[Any]) -> Any:
        return {"shard": self.shard, "pid": os.getpid(), "epoch": self.epoch}

    def _get(self, args: list[Any]) -> Any:
        ns, key = self._ns_key(args, 2)
        found = self.store.get_raw(ns, key)
        return None if found is None else list(found)

    def _set(self, args: list[Any]) -> Any:
        ns, key = self._ns_key(args, 4)
        limits = self.namespaces[ns]
        value = self._value(args[2], limits)
        scope = self._scope(args[3])
        if limits.max_keys and self.store.get_raw(ns, key) is None:
            admission = self.quotas.admit(ns)
            if admission is Admission.WAIT:
                return PARKED
            if admission is Admission.FULL:
                raise NamespaceFull(f"namespace {ns.decode()!r} holds its max_keys={limits.max_keys} keys")
        return self.store.set_raw(ns, key, value, scope)

    def _update(self, args: list[Any]) -> Any:
        ns, key = self._ns_key(args, 3)
        value = self._value(args[2], self.namespaces[ns])
        old = self.store.get_raw(ns, key)
        if old is None:
            raise KeyNotFound(f"key {key.decode(errors='replace')!r} does not exist")
        scope = self.store.scope_of_raw(ns, key) or Scope.PERMANENT
        ts = self.store.set_raw(ns, key, value, scope)
        return [old[0], ts]

    def _exists(self, args: list[Any]) -> Any:
        ns, key = self._ns_key(args, 2)
        return self.store.get_raw(ns, key) is not None

    def _consume(self, args: list[Any]) -> Any:
        ns, key = self._ns_key(args, 2)
        found = self.store.get_raw(ns, key)
        if found is None:
            raise KeyNotFound(f"key {key.decode(errors='replace')!r} does not exist")
        self.store.delete_raw(ns, key)
        self.quotas.deleted(ns)
        return found[0]

    def _delete(self, args: list[Any]) -> Any:
        ns, key = self._ns_key(args, 2)
        existed = self.store.delete_raw(ns, key) is not None
        if existed:
            self.quotas.deleted(ns)
        return existed

    def _count(self, args: list[Any]) -> Any:
        if len(args) != 1:
            raise InvalidRequest("COUNT takes [namespace]")
        ns, _limits = self.namespace(args[0])
        return self.store.count_raw(ns)

    def _scan(self, args: list[Any]) -> Any:
        """One page of a namespace's keys: [cursor or nil when done, [[key, value, ts], ...]]."""
        if len(args) != 4:
            raise InvalidRequest("SCAN takes [namespace, cursor, limit, scope]")
        ns, _limits = self.namespace(args[0])
        cursor, limit, scope_code = args[1], args[2], args[3]
        if type(limit) is not int or not 0 < limit <= SCAN_PAGE_KEYS:
            raise InvalidRequest(f"scan page size must be 1..{SCAN_PAGE_KEYS}")
        scope = None if scope_code is None else self._scope(scope_code)
        self._expire_scans()
        if cursor is None:
            scan, cursor = _Scan(self.store.keys_raw(ns, scope)), self._open_scan()
            self.scans[cursor] = scan
        elif type(cursor) is int and cursor in self.scans:
            scan = self.scans[cursor]
            scan.last_used = time.monotonic()
            self.scans.move_to_end(cursor)
        else:
            raise InvalidRequest(f"scan cursor {cursor!r} is unknown or expired (idle over {SCAN_IDLE_SECONDS:.0f} s)")
        page: list[list[Any]] = []
        size = 0
        keys = scan.keys
        while scan.position < len(keys) and len(page) < limit and size < SCAN_PAGE_BYTES:
            key = keys[scan.position]
            scan.position += 1
            found = self.store.get_raw(ns, key)
            if found is not None and (scope is None or self.store.scope_of_raw(ns, key) is scope):
                page.append([key, found[0], found[1]])
                size += len(key) + len(found[0])
        if scan.position >= len(keys):
            del self.scans[cursor]
            return [None, page]
        return [cursor, page]

    def _txn_commit(self, args: list[Any]) -> Any:
        if len(args) != 2 or type(args[0]) is not bytes or type(args[1]) is not int:
            raise InvalidRequest("TXN_COMMIT takes [txn, ts]")
        if not 0 < args[1] < MAX_TIMESTAMP:  # the journal's field; found by fuzzing: a negative one killed the shard
            raise InvalidRequest(f"a commit timestamp is 1..{MAX_TIMESTAMP - 1} µs, not {args[1]}")
        self.commit(args[0], args[1])
        return None

    def _txn_abort(self, args: list[Any]) -> Any:
        if len(args) != 1 or type(args[0]) is not bytes:
            raise InvalidRequest("TXN_ABORT takes [txn]")
        self.abort(args[0])
        return None

    def _stats(self, args: list[Any]) -> Any:
        return {
            "shard": self.shard,
            "pid": os.getpid(),
            "keys": self.store.count(),
            "ops_total": self.ops_total,
            "transactions_prepared": len(self.transactions),
            "requests_waiting": self.waiting(),
            "namespaces": {ns.decode(): self.store.count_raw(ns) for ns in self.namespaces},
            **{k: v for k, v in self.store.stats().items() if k != "keys"},
        }

    # -- helpers -------------------------------------------------------------------

    def _ns_key(self, args: list[Any], arity: int) -> tuple[bytes, bytes]:
        if len(args) != arity:
            raise InvalidRequest(f"expected {arity} arguments, got {len(args)}")
        ns, _limits = self.namespace(args[0])
        return ns, _bytes_arg(args[1], "a key", MAX_KEY_BYTES)

    @staticmethod
    def _value(value: Any, limits: NamespaceLimits) -> bytes:
        if type(value) is not bytes or not value:
            raise InvalidRequest("a value travels as non-empty msgpack bytes")
        if limits.max_value_bytes and len(value) > limits.max_value_bytes:
            raise ValueTooLarge(f"value is {len(value)} bytes; the namespace allows {limits.max_value_bytes}")
        try:
            unpack_value(value)  # one complete msgpack object, or other readers would choke on it
        except StorageError:
            raise InvalidRequest("value is not one complete msgpack object") from None
        return value

    def _open_scan(self) -> int:
        if len(self.scans) >= MAX_OPEN_SCANS:
            self.scans.popitem(last=False)  # the least recently used scan gives way
        cursor = self._next_scan
        self._next_scan += 1
        return cursor

    def _expire_scans(self) -> None:
        deadline = time.monotonic() - SCAN_IDLE_SECONDS
        while self.scans:
            cursor, scan = next(iter(self.scans.items()))
            if scan.last_used >= deadline:
                break
            del self.scans[cursor]

    # -- namespace administration (from the coordinator) ---------------------------

    def sync_namespaces(self, namespaces: dict[str, Any]) -> QuotaReport:
        """Adopt the coordinator's namespace list; returns the report of their key quotas."""
        configs: dict[bytes, NamespaceLimits] = {}
        for name, (max_keys, max_value_bytes) in namespaces.items():
            configs[name.encode()] = NamespaceLimits(int(max_keys), int(max_value_bytes))
        self.namespaces = configs
        self.quotas.forget_except(set(configs))
        return self.quotas.report(list(configs))

    def drop_namespace(self, ns: bytes) -> int:
        self.namespaces.pop(ns, None)
        self.quotas.forget(ns)
        return self.store.drop_namespace_raw(ns)
