"""Requests that wait for a prepared transaction to be decided.

A key locked by a prepared two-phase-commit transaction may change at any moment
(commit) or not (abort): a read of it must not answer until that is known, or it
could show one shard's half of a batch. So every request that touches a locked key
waits here, filed under the transaction, and runs again — in arrival order — once
the transaction is committed or aborted. The keys of a waiting request are marked
too: a later request on one of them queues behind it, so a client's pipeline keeps
its order. Prepares and atomic batches never wait on a lock (they are refused at
once), so waiting can never close a cycle.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Final, Generic, TypeVar

from kvcluster.codec import Op, Request

__all__ = ["WAIT_LIMIT", "LockWaits"]

WAIT_LIMIT: Final = 30.0  # seconds a request waits for a decision before it gets an error
_ONE_KEY: Final = frozenset({Op.GET, Op.SET, Op.UPDATE, Op.EXISTS, Op.CONSUME, Op.DELETE})
_KEY_LIST: Final = frozenset({Op.MGET, Op.MDELETE, Op.MCONSUME})

E = TypeVar("E")  # where a reply goes (the shard's envelope type)


def request_keys(request: Request) -> tuple[Any, list[Any]] | None:
    """(namespace, keys) a request touches; None for one that names no key (or is
    malformed: its handler will say so)."""
    op, args = request.op, request.args
    try:
        if op in _ONE_KEY:
            return args[0], [args[1]]
        if op in _KEY_LIST:
            return args[0], list(args[1])
        if op is Op.MSET:
            return args[0], [item[0] for item in args[1]]
        if op is Op.ATOMIC:
            items = args[2]
            return args[0], [item[0] for item in items] if args[1] == "set" else list(items)
    except (IndexError, TypeError, KeyError):
        return None
    return None


class LockWaits(Generic[E]):
    def __init__(self) -> None:
        self.queues: dict[bytes, deque[tuple[E, Request, float]]] = {}
        self.marked: dict[tuple[bytes, bytes], bytes] = {}  # keys of waiting requests -> txn

    def __len__(self) -> int:
        return sum(len(queue) for queue in self.queues.values())

    def blocker(self, request: Request, locks: dict[bytes, dict[bytes, bytes]], prepared_in: Any) -> bytes | None:
        """The transaction `request` must wait for, if any."""
        if request.op is Op.SCAN:  # a page must not show half a batch: wait for all of it
            return prepared_in(request.args[0]) if request.args else None
        touched = request_keys(request)
        if touched is None:
            return None
        ns, keys = touched
        if type(ns) is not bytes:
            return None
        marked, held = self.marked, locks.get(ns, {})
        for key in keys:
            if type(key) is bytes:
                txn = marked.get((ns, key)) or held.get(key)
                if txn is not None:
                    return txn
        return None

    def wait(self, txn: bytes, envelope: E, request: Request) -> None:
        self.queues.setdefault(txn, deque()).append((envelope, request, time.monotonic()))
        touched = request_keys(request)
        if touched is not None and type(touched[0]) is bytes:
            ns = touched[0]
            for key in touched[1]:
                if type(key) is bytes:
                    self.marked.setdefault((ns, key), txn)

    def release(self, txn: bytes) -> list[tuple[E, Request]]:
        """The requests that waited for `txn`, in order, to run again (some may wait again)."""
        queue = self.queues.pop(txn, None)
        if queue is None:
            return []
        self.marked = {key: holder for key, holder in self.marked.items() if holder != txn}
        return [(envelope, request) for envelope, request, _since in queue]

    def expired(self, now: float) -> list[tuple[E, Request]]:
        """Requests that waited longer than WAIT_LIMIT: they are answered with an error."""
        out: list[tuple[E, Request]] = []
        for txn in [txn for txn, queue in self.queues.items() if now - queue[0][2] > WAIT_LIMIT]:
            out.extend(self.release(txn))
        return out
