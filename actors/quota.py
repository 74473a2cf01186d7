"""Exact `max_keys` across shards: per-shard key quotas that the coordinator hands out.

Each shard may hold at most `limit` keys of a namespace; the coordinator keeps the
sum of all limits within `max_keys`. A shard inserts a new key only below its limit;
at the limit it asks the coordinator for more, which grants from the free pool or
first reclaims the spare (limit - count) of the other shards. So the limit is never
exceeded, even with writers on every shard at once, and a namespace is reported
full only when every shard together holds `max_keys` keys.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvcluster.codec import Op, Reply

if TYPE_CHECKING:
    from kvcluster.actors.links import ShardLinks

__all__ = ["Admission", "QuotaBook", "QuotaBroker", "QuotaLedger"]


class Admission(enum.Enum):
    FITS = "fits"
    FULL = "full"
    WAIT = "wait"


class QuotaLedger:
    """A shard's side: its limit per namespace, and whether it is waiting for a grant."""

    def __init__(self, count: Callable[[bytes], int], ask: Callable[[bytes, int], None]) -> None:
        self._count = count
        self._ask = ask
        self._granted: dict[bytes, int] = {}
        self.asking: set[bytes] = set()
        self.denied: set[bytes] = set()  # the last answer was "nothing left", for the parked writes
        self.reserved: dict[bytes, int] = {}  # new keys of prepared transactions, not inserted yet
        self.shrinking: set[bytes] = set()  # holding more than max_keys: deletes give slots back

    def limit(self, ns: bytes) -> int:
        """Keys this shard may hold: what was granted, and never less than what it holds."""
        return max(self._granted.get(ns, 0), self._held(ns))

    def _held(self, ns: bytes) -> int:
        return self._count(ns) + self.reserved.get(ns, 0)

    def room(self, ns: bytes) -> int:
        """New keys that fit now without asking."""
        return max(0, self._granted.get(ns, 0) - self._held(ns))

    def reserve(self, ns: bytes, n: int) -> None:
        """Hold room for `n` keys a prepared transaction will insert when it commits."""
        self.reserved[ns] = self.reserved.get(ns, 0) + n

    def unreserve(self, ns: bytes, n: int) -> None:
        left = self.reserved.get(ns, 0) - n
        if left > 0:
            self.reserved[ns] = left
        else:
            self.reserved.pop(ns, None)

    def admit(self, ns: bytes, n: int = 1) -> Admission:
        """May one more key of `ns` be inserted now?

        FITS: yes. FULL: no — the coordinator answered the writes parked for this answer
        that nothing is left anywhere. WAIT: ask the coordinator (already asked, or asking
        now) and retry on its answer. Nothing is cached past one answer: a key deleted on
        any shard makes room for the next insert anywhere.
        """
        missing = self._held(ns) + n - self._granted.get(ns, 0)
        if missing <= 0:
            return Admission.FITS
        if ns in self.denied:
            return Admission.FULL
        if ns not in self.asking:
            self.asking.add(ns)
            self._ask(ns, missing)
        return Admission.WAIT

    def granted(self, ns: bytes, amount: int) -> None:
        self.asking.discard(ns)
        self._granted[ns] = self.limit(ns) + max(0, amount)
        if amount <= 0:
            self.denied.add(ns)
        else:
            self.shrinking.discard(ns)  # the coordinator had room: the namespace is under its limit

    def answered(self, ns: bytes) -> None:
        """The writes parked for the last answer have been answered: ask afresh from now on."""
        self.denied.discard(ns)

    def release(self, ns: bytes, shrink: bool) -> int:
        """Give back the spare quota; returns the limit kept (the keys held now).

        With `shrink` the namespace holds more keys than its max_keys (which was
        lowered): until a grant says there is room again, each delete gives its slot
        back too, instead of keeping it as spare.
        """
        held = self._held(ns)
        self._granted[ns] = held
        if shrink:
            self.shrinking.add(ns)
        return held

    def deleted(self, ns: bytes) -> None:
        """A key of `ns` was removed here; while shrinking, its slot is not kept."""
        if ns in self.shrinking:
            self._granted[ns] = self._held(ns)

    def forget(self, ns: bytes) -> None:
        self._granted.pop(ns, None)
        self.asking.discard(ns)
        self.denied.discard(ns)
        self.shrinking.discard(ns)

    def forget_except(self, keep: set[bytes]) -> None:
        for ns in [ns for ns in self._granted if ns not in keep]:
            self.forget(ns)


@dataclass
class _Namespace:
    max_keys: int
    held: dict[int, int] = field(default_factory=dict)  # shard -> its limit, as last known


class QuotaBook:
    """The coordinator's side: who holds how much of each namespace's `max_keys`."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._spaces: dict[str, _Namespace] = {}

    def configure(self, ns: str, max_keys: int) -> None:
        """Track `ns` with a new limit (0: unlimited, nothing to track)."""
        if max_keys <= 0:
            self._spaces.pop(ns, None)
            return
        space = self._spaces.get(ns)
        if space is None:
            self._spaces[ns] = _Namespace(max_keys)
        else:
            space.max_keys = max_keys

    def forget(self, ns: str) -> None:
        self._spaces.pop(ns, None)

    def tracked(self, ns: str) -> bool:
        return ns in self._spaces

    def report(self, shard: int, ns: str, limit: int) -> None:
        """A shard told its current limit (at HELLO, after a sync or a release)."""
        space = self._spaces.get(ns)
        if space is not None:
            space.held[shard] = limit

    def unknown(self, ns: str) -> bool:
        """True until every shard has reported: until then nothing can be granted safely."""
        space = self._spaces.get(ns)
        return space is not None and len(space.held) < self.shards

    def free(self, ns: str) -> int:
        space = self._spaces[ns]
        return space.max_keys - sum(space.held.values())

    def grant(self, ns: str, shard: int, wanted: int) -> int:
        """Grant from the free pool (never more than it holds); 0 when it is empty."""
        space = self._spaces.get(ns)
        if space is None or self.unknown(ns):
            return 0
        free = self.free(ns)
        if free <= 0:
            return 0
        chunk = max(1, space.max_keys // (8 * self.shards))  # fewer round trips, little hoarding
        amount = min(free, max(wanted, chunk))
        space.held[shard] = space.held.get(shard, 0) + amount
        return amount

    def holders_with_spare(self, ns: str, asking: int) -> list[int]:
        """Shards that may hold spare quota worth reclaiming (all but the asker)."""
        space = self._spaces.get(ns)
        return [] if space is None else [shard for shard in space.held if shard != asking]


class QuotaBroker:
    """The coordinator's quota conversations with its shards, over its shard links."""

    def __init__(self, book: QuotaBook, links: ShardLinks, live: Callable[[], list[int]]) -> None:
        self.book = book
        self.links = links
        self.live = live  # the shards with a process now
        self.reclaiming: dict[str, list[tuple[int, int, Callable[[Any], None]]]] = {}

    def ask(self, shard: int, ns: str, wanted: int, held: int, answer: Callable[[Any], None]) -> None:
        """A shard at its limit asks for more; `answer(granted)` replies, maybe later."""
        self.book.report(shard, ns, held)  # what it holds now: the book follows the shards
        if ns in self.reclaiming:
            self.reclaiming[ns].append((shard, wanted, answer))
            return
        granted = self.book.grant(ns, shard, wanted)
        if granted > 0 or not self.book.tracked(ns) or self.book.unknown(ns):
            answer(granted)
            return
        self.reclaiming[ns] = [(shard, wanted, answer)]  # nothing free: take back other shards' spare

        def released(answers: dict[int, Reply | None]) -> None:
            self.record(ns, answers)
            for asker, amount, reply in self.reclaiming.pop(ns, []):
                reply(self.book.grant(ns, asker, amount))

        live = set(self.live())
        others = [other for other in self.book.holders_with_spare(ns, shard) if other in live]
        self.links.fan_out(others, Op.QUOTA_RELEASE, [ns, False], released, 1.0)

    def reset(self, ns: str, then: Callable[[], None]) -> None:
        """After max_keys changed: every shard gives back its spare, so limits equal counts.

        If the shards then hold more than the new limit, they are told to stay without
        spare (each delete returns its slot) until the namespace is back under its limit.
        """

        def released(answers: dict[int, Reply | None]) -> None:
            self.record(ns, answers)
            if self.book.tracked(ns) and self.book.free(ns) < 0:
                self.links.fan_out(self.live(), Op.QUOTA_RELEASE, [ns, True], lambda _answers: then())
            else:
                then()

        self.links.fan_out(self.live(), Op.QUOTA_RELEASE, [ns, False], released)

    def record(self, ns: str, answers: dict[int, Reply | None]) -> None:
        """Shards answered a release with the limit each keeps."""
        for shard, reply in answers.items():
            if reply is not None and reply.status == 0 and type(reply.result) is int:
                self.book.report(shard, ns, reply.result)
