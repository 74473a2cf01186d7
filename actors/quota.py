"""Exact `max_keys` across shards: per-shard key quotas that the coordinator hands out.

Each shard may hold at most `limit` keys of a namespace; the coordinator keeps the
sum of all limits within `max_keys`. A shard inserts a new key only below its limit;
at the limit it asks the coordinator for more, which grants from the free pool or
first reclaims the spare (limit - count) of the other shards. So the limit is never
exceeded, even with writers on every shard at once, and a namespace is reported
full only when every shard together holds `max_keys` keys.

Shards report their limits over two sockets (asks and HELLO on one, answers to the
coordinator's requests on the other), so reports can arrive out of order, and a grant
can reach a shard after a later release. Two numbers keep the book exact anyway:
every report carries a stamp (its place in the shard's history; older reports are
ignored) and the number of the last grant the shard had applied when it reported
(grants it had not seen yet are added back on top of what it reports).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvcluster.codec import Op, Reply

if TYPE_CHECKING:
    from kvcluster.actors.links import ShardLinks

__all__ = ["Admission", "QuotaBook", "QuotaBroker", "QuotaLedger", "QuotaReport"]

# [stamp, last grant applied, {namespace: limit}]: what a shard tells the coordinator.
QuotaReport = list[Any]


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
        self.grants_seen = 0  # the number of the last grant applied
        self._stamp = 0

    def report(self, namespaces: list[bytes]) -> QuotaReport:
        """The limits of `namespaces` now, stamped with their place in this shard's history.

        The stamp is the host's monotonic clock (kept strictly increasing), so the
        reports of a restarted shard also come after those of the process it replaces.
        """
        self._stamp = max(self._stamp + 1, time.monotonic_ns())
        return [self._stamp, self.grants_seen, {ns.decode(): self.limit(ns) for ns in namespaces}]

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

    def granted(self, ns: bytes, amount: int, number: int = 0) -> None:
        """The coordinator's answer: `amount` more keys, its grant `number` (0: none)."""
        self.grants_seen = max(self.grants_seen, number)
        self.asking.discard(ns)
        self._granted[ns] = self.limit(ns) + max(0, amount)
        if amount <= 0:
            self.denied.add(ns)
        else:
            self.shrinking.discard(ns)  # the coordinator had room: the namespace is under its limit

    def answered(self, ns: bytes) -> None:
        """The writes parked for the last answer have been answered: ask afresh from now on."""
        self.denied.discard(ns)

    def release(self, ns: bytes, shrink: bool) -> QuotaReport:
        """Give back the spare quota; returns the report of the limit kept (the keys held now).

        With `shrink` the namespace holds more keys than its max_keys (which was
        lowered): until a grant says there is room again, each delete gives its slot
        back too, instead of keeping it as spare.
        """
        self._granted[ns] = self._held(ns)
        if shrink:
            self.shrinking.add(ns)
        return self.report([ns])

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


@dataclass
class _Shard:
    since: int = 0  # the stamp of its HELLO: asks stamped earlier come from a dead process
    stamp: int = -1  # the newest report applied
    unseen: list[tuple[int, str, int]] = field(default_factory=list)  # grants sent: (number, ns, amount)


def parse_report(report: Any) -> tuple[int, int, dict[str, int]] | None:
    """A shard's report, checked: (stamp, grants seen, {ns: limit}), or None if malformed."""
    if not isinstance(report, list) or len(report) != 3:
        return None
    stamp, seen, limits = report
    if type(stamp) is not int or type(seen) is not int or not isinstance(limits, dict):
        return None
    if not all(type(ns) is str and type(limit) is int and limit >= 0 for ns, limit in limits.items()):
        return None
    return stamp, seen, limits


class QuotaBook:
    """The coordinator's side: who holds how much of each namespace's `max_keys`.

    Each shard's entry is an upper bound of what it may insert: a grant counts from
    the moment it is made, and a report lowers the entry only when it is the shard's
    newest, with the grants it had not applied yet added back.
    """

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._spaces: dict[str, _Namespace] = {}
        self._holders: dict[int, _Shard] = {}
        self._grants = 0  # the number of the last grant made

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

    def started(self, shard: int, report: Any) -> bool:
        """A shard process (re)started and said HELLO: its report replaces all it held."""
        parsed = parse_report(report)
        if parsed is None:
            return False
        self._holders[shard] = _Shard(since=parsed[0])
        return self.report(shard, report)

    def report(self, shard: int, report: Any) -> bool:
        """A shard told its limits; False when the report is malformed or out of date."""
        parsed = parse_report(report)
        if parsed is None:
            return False
        stamp, seen, limits = parsed
        holder = self._holders.setdefault(shard, _Shard())
        if stamp <= holder.stamp or stamp < holder.since:
            return False
        holder.stamp = stamp
        holder.unseen = [grant for grant in holder.unseen if grant[0] > seen]
        for ns, limit in limits.items():
            space = self._spaces.get(ns)
            if space is not None:
                space.held[shard] = limit + sum(amount for _n, name, amount in holder.unseen if name == ns)
        return True

    def current(self, shard: int, report: Any) -> bool:
        """False when `report` comes from a process older than the shard's last HELLO."""
        parsed = parse_report(report)
        return parsed is not None and parsed[0] >= self._holders.setdefault(shard, _Shard()).since

    def unknown(self, ns: str) -> bool:
        """True until every shard has reported: until then nothing can be granted safely."""
        space = self._spaces.get(ns)
        return space is not None and len(space.held) < self.shards

    def free(self, ns: str) -> int:
        space = self._spaces[ns]
        return space.max_keys - sum(space.held.values())

    def grant(self, ns: str, shard: int, wanted: int) -> list[int]:
        """Grant from the free pool (never more than it holds): [amount, grant number];
        [0, 0] when it is empty."""
        space = self._spaces.get(ns)
        if space is None or self.unknown(ns):
            return [0, 0]
        free = self.free(ns)
        if free <= 0:
            return [0, 0]
        chunk = max(1, space.max_keys // (8 * self.shards))  # fewer round trips, little hoarding
        amount = min(free, max(wanted, chunk))
        space.held[shard] = space.held.get(shard, 0) + amount
        self._grants += 1
        self._holders.setdefault(shard, _Shard()).unseen.append((self._grants, ns, amount))
        return [amount, self._grants]

    def holders_with_spare(self, ns: str, asking: int) -> list[int]:
        """Shards that may hold spare quota worth reclaiming (all but the asker)."""
        space = self._spaces.get(ns)
        return [] if space is None else [shard for shard in space.held if shard != asking]


class QuotaBroker:
    """The coordinator's quota conversations with its shards, over its shard links."""

    def __init__(
        self,
        book: QuotaBook,
        links: ShardLinks,
        live: Callable[[], list[int]],
        before_release: Callable[[list[int]], None] = lambda shards: None,
    ) -> None:
        self.before_release = before_release  # sends shards what they must apply first
        self.book = book
        self.links = links
        self.live = live  # the shards with a process now
        self.reclaiming: dict[str, list[tuple[int, int, Callable[[Any], None]]]] = {}

    def ask(self, shard: int, ns: str, wanted: int, report: Any, answer: Callable[[Any], None]) -> None:
        """A shard at its limit asks for more; `answer([amount, grant number])` replies,
        maybe later. `report` is the shard's limit as it asked."""
        if not self.book.current(shard, report):
            answer([0, 0])  # sent by a process that has died since: grant nothing to it
            return
        self.book.report(shard, report)
        if ns in self.reclaiming:
            self.reclaiming[ns].append((shard, wanted, answer))
            return
        granted = self.book.grant(ns, shard, wanted)
        if granted[0] > 0 or not self.book.tracked(ns) or self.book.unknown(ns):
            answer(granted)
            return
        self.reclaiming[ns] = [(shard, wanted, answer)]  # nothing free: take back other shards' spare

        def released(answers: dict[int, Reply | None]) -> None:
            self.record(answers)
            for asker, amount, reply in self.reclaiming.pop(ns, []):
                reply(self.book.grant(ns, asker, amount))

        live = set(self.live())
        others = [other for other in self.book.holders_with_spare(ns, shard) if other in live]
        self.before_release(others)
        self.links.fan_out(others, Op.QUOTA_RELEASE, [ns, False], released, 1.0)

    def reset(self, ns: str, then: Callable[[], None]) -> None:
        """After max_keys changed: every shard gives back its spare, so limits equal counts.

        If the shards then hold more than the new limit, they are told to stay without
        spare (each delete returns its slot) until the namespace is back under its limit.
        """

        def shrinking(answers: dict[int, Reply | None]) -> None:
            self.record(answers)
            then()

        def released(answers: dict[int, Reply | None]) -> None:
            self.record(answers)
            if self.book.tracked(ns) and self.book.free(ns) < 0:
                self.links.fan_out(self.live(), Op.QUOTA_RELEASE, [ns, True], shrinking)
            else:
                then()

        self.links.fan_out(self.live(), Op.QUOTA_RELEASE, [ns, False], released)

    def record(self, answers: dict[int, Reply | None]) -> None:
        """Shards answered with their limits (a release, a namespace sync): note them."""
        for shard, reply in answers.items():
            if reply is not None and reply.status == 0:
                self.book.report(shard, reply.result)
