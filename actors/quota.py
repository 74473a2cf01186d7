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
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Admission", "QuotaBook", "QuotaLedger"]

RETRY_AFTER_DENIAL = 0.05  # seconds a shard waits before asking again after "nothing left"


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
        self._denied_at: dict[bytes, float] = {}

    def limit(self, ns: bytes) -> int:
        """Keys this shard may hold: what was granted, and never less than what it holds."""
        return max(self._granted.get(ns, 0), self._count(ns))

    def admit(self, ns: bytes) -> Admission:
        """May one more key of `ns` be inserted now?

        FITS: yes. FULL: no, and the coordinator just said nothing is left anywhere.
        WAIT: ask the coordinator (already asked, or asking now) and retry on its answer.
        """
        if self._count(ns) < self._granted.get(ns, 0):
            return Admission.FITS
        denied = self._denied_at.get(ns)
        if denied is not None and time.monotonic() - denied < RETRY_AFTER_DENIAL:
            return Admission.FULL
        if ns not in self.asking:
            self.asking.add(ns)
            self._ask(ns, 1)
        return Admission.WAIT

    def granted(self, ns: bytes, amount: int) -> None:
        self.asking.discard(ns)
        self._granted[ns] = self.limit(ns) + max(0, amount)
        if amount <= 0:
            self._denied_at[ns] = time.monotonic()
        else:
            self._denied_at.pop(ns, None)

    def release(self, ns: bytes) -> int:
        """Give back the spare quota (limit - count); returns how much."""
        count = self._count(ns)
        spare = max(0, self._granted.get(ns, 0) - count)
        self._granted[ns] = count
        return spare

    def forget(self, ns: bytes) -> None:
        self._granted.pop(ns, None)
        self.asking.discard(ns)
        self._denied_at.pop(ns, None)

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

    def released(self, ns: str, shard: int, amount: int) -> None:
        space = self._spaces.get(ns)
        if space is not None and shard in space.held:
            space.held[shard] = max(0, space.held[shard] - amount)

    def holders_with_spare(self, ns: str, asking: int) -> list[int]:
        """Shards that may hold spare quota worth reclaiming (all but the asker)."""
        space = self._spaces.get(ns)
        return [] if space is None else [shard for shard in space.held if shard != asking]
