"""The coordinator's decision log: the outcome of each cross-shard transaction.

Two-phase commit, as kvcluster runs it: the client has every participant shard
prepare (validate, lock the keys, journal the changes), then asks here for the
decision. A transaction is committed at the moment its commit decision is journaled
in this log — before that, any crash leaves it undecided, and an undecided
transaction is aborted (presumed abort). So no participant ever applies half of one.

Deadlines make presumed abort safe: each transaction carries one (µs since the
epoch), a commit is refused once it has passed, and only after it has passed does a
shard asking about an undecided transaction get "abort" — recorded here first, so a
late commit request is refused even if the clock steps back.

A commit decision is pushed to every participant until each has said it applied it
(the client, for the shards that acknowledged its commit; a shard itself, for one that
learned the outcome from here). Applied everywhere before its deadline, it is dropped:
only its client's commits get participants there that early, so the client has its
answer. Applied later, or read back after a coordinator restart, it is kept for
COMMIT_KEPT_FOR past its deadline: its client may still be asking (the request queued
while the coordinator restarted), and without the record it would be told "abort" for
a committed batch. Clients stop asking DECIDE_GRACE (client/batches.py) after the
deadline, well before.
Abort decisions are kept for an hour past their deadline, then dropped.

The log is a `VersionedStore` of its own (namespace ``txn``, key the transaction id
in hex) with the cluster's durability, in ``<data dir>/coordinator/decisions``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from kvcluster.config import Durability
from kvcluster.errors import InvalidRequest
from kvcluster.failpoints import failpoint
from kvcluster.journal import VersionedStore

__all__ = ["ABORT", "COMMIT", "Decision", "DecisionLog"]

log = logging.getLogger("kvcluster.coordinator")

COMMIT: Final = "commit"
ABORT: Final = "abort"
PENDING: Final = "pending"
_NS: Final = b"txn"
ABORT_KEPT_FOR: Final = 3600 * 1_000_000  # µs an abort decision is kept past its deadline
COMMIT_KEPT_FOR: Final = 120 * 1_000_000  # µs an applied commit is kept past its deadline
MAX_TXN_ID: Final = 64
MAX_PARTICIPANTS: Final = 4096
MAX_FORGET: Final = 4096  # transactions one TXN_FORGET may name


def _now() -> int:
    return time.time_ns() // 1000


@dataclass
class Decision:
    outcome: str  # COMMIT or ABORT
    ts: int  # the transaction's timestamp (commit); 0 for an abort
    deadline: int
    left: set[int] = field(default_factory=set)  # participants not known to have applied it
    recovered: bool = False  # read back at startup: an earlier coordinator's answer may be lost

    def answer(self) -> list[Any]:
        return [COMMIT, self.ts] if self.outcome == COMMIT else [ABORT]

    def pack(self) -> bytes:
        packed: bytes = msgpack.packb([self.outcome, self.ts, self.deadline, sorted(self.left)])
        return packed

    @classmethod
    def unpack(cls, raw: bytes) -> Decision:
        outcome, ts, deadline, left = msgpack.unpackb(raw)
        return cls(outcome, ts, deadline, set(left))


def txn_id(value: Any) -> bytes:
    if type(value) is not bytes or not 0 < len(value) <= MAX_TXN_ID:
        raise InvalidRequest(f"a transaction id is 1..{MAX_TXN_ID} bytes")
    return value


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise InvalidRequest(f"{what} must be a non-negative integer")
    return value


class DecisionLog:
    def __init__(self, directory: str, durability: Durability) -> None:
        self.store = VersionedStore.open(directory, durability=durability, buffer_size=1 << 20)
        self.decisions: dict[bytes, Decision] = {}
        self.floor = 0  # the latest snapshot cut: commits decided from now on are newer
        for key in self.store.keys_raw(_NS):
            found = self.store.get_raw(_NS, key)
            try:
                if found is not None:
                    decision = Decision.unpack(found[0])
                    decision.recovered = True
                    self.decisions[bytes.fromhex(key.decode())] = decision
            except (ValueError, TypeError, msgpack.ExtraData) as exc:
                log.error("unreadable decision for transaction %r: %s", key, exc)

    def close(self) -> None:
        self.store.close()

    # -- requests --------------------------------------------------------------------

    def decide(self, txn: Any, outcome: Any, ts: Any, deadline: Any, participants: Any) -> list[Any]:
        """TXN_DECIDE: commit `txn` at `ts` (or abort it) unless it is decided already;
        a commit past the deadline is an abort.

        A client records an abort only when a participant's vote is unknown (it timed
        out or died while preparing): that shard, back, learns it at once instead of
        holding its locks until the deadline.
        """
        txn, ts, deadline = txn_id(txn), _int(ts, "a timestamp"), _int(deadline, "a deadline")
        if outcome not in (COMMIT, ABORT):
            raise InvalidRequest(f"a decision is {COMMIT!r} or {ABORT!r}, not {outcome!r}")
        if not isinstance(participants, list) or not 0 < len(participants) <= MAX_PARTICIPANTS:
            raise InvalidRequest("a transaction names its participant shards")
        known = self.decisions.get(txn)
        if known is not None:
            return known.answer()  # a retried request gets the first answer
        if outcome == ABORT or _now() >= deadline:
            return self._record(txn, Decision(ABORT, 0, deadline))
        failpoint("coordinator.txn_decide")
        ts = max(ts, self.floor + 1)  # a snapshot cut at `floor` was taken without it: later
        answer = self._record(txn, Decision(COMMIT, ts, deadline, {_int(p, "a shard") for p in participants}))
        failpoint("coordinator.txn_decided")
        return answer

    def status(self, txn: Any, deadline: Any) -> list[Any]:
        """TXN_STATUS, from a shard holding `txn` prepared: the outcome, or "pending"
        while its client may still decide."""
        txn, deadline = txn_id(txn), _int(deadline, "a deadline")
        known = self.decisions.get(txn)
        if known is not None:
            return known.answer()
        if _now() < deadline:
            return [PENDING]
        return self._record(txn, Decision(ABORT, 0, deadline))  # presumed abort, made final

    def applied(self, txns: Any, shard: Any) -> None:
        """TXN_FORGET: participant `shard` has applied the commit decisions of `txns`."""
        if not isinstance(txns, list) or len(txns) > MAX_FORGET or type(shard) is not int:
            raise InvalidRequest(f"TXN_FORGET takes [[txn, ...] (at most {MAX_FORGET}), shard]")
        for txn in map(txn_id, txns):
            known = self.decisions.get(txn)
            if known is None or known.outcome != COMMIT:
                continue
            if shard in known.left:
                known.left.discard(shard)
                if known.left:
                    continue
                if known.recovered or _now() >= known.deadline:  # its client may still ask (see above)
                    self.store.set_raw(_NS, txn.hex().encode(), known.pack())
                else:  # applied before the deadline: only the client's own commits do that
                    del self.decisions[txn]
                    self.store.delete_raw(_NS, txn.hex().encode())

    # -- upkeep ----------------------------------------------------------------------

    def commits_kept(self) -> int:
        """Commit decisions some participant has not confirmed yet."""
        return sum(1 for decision in self.decisions.values() if decision.outcome == COMMIT and decision.left)

    def commits_at_or_before(self, cut: int) -> list[tuple[bytes, int, set[int]]]:
        """Commit decisions at or before `cut` some participant has not confirmed:
        (txn, ts, those participants) — what a snapshot at `cut` must see applied."""
        return [
            (t, d.ts, set(d.left)) for t, d in self.decisions.items() if d.outcome == COMMIT and d.left and d.ts <= cut
        ]

    def unapplied(self) -> list[tuple[bytes, Decision]]:
        """Commit decisions past their deadline that some participant has not confirmed."""
        now = _now()
        return [(t, d) for t, d in self.decisions.items() if d.outcome == COMMIT and d.left and d.deadline < now]

    def purge(self) -> None:
        """Drop abort decisions long past their deadline, and applied commits past theirs."""
        now = _now()

        def done_with(d: Decision) -> bool:
            if d.outcome == ABORT:
                return d.deadline < now - ABORT_KEPT_FOR
            return not d.left and d.deadline < now - COMMIT_KEPT_FOR

        for txn in [t for t, d in self.decisions.items() if done_with(d)]:
            del self.decisions[txn]
            self.store.delete_raw(_NS, txn.hex().encode())

    def tick(self) -> None:
        self.store.tick()

    def flush_due_in(self) -> float | None:
        return self.store.flush_due_in()

    def _record(self, txn: bytes, decision: Decision) -> list[Any]:
        self.store.set_raw(_NS, txn.hex().encode(), decision.pack())
        self.decisions[txn] = decision
        return decision.answer()
