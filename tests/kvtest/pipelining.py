"""Many requests in flight at once through the asyncio client, each accounted for: one
outcome per request (its result or its error), replies counted on the wire by sequence
number, and the journals read back to count how often each write was applied."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from kvcluster import AsyncNamespace, KVError
from kvcluster.client import aio_links
from kvcluster.codec import Reply, decode_reply
from kvcluster.datadir import DataDir
from kvcluster.journal.archive import list_archives, list_raw_archives
from kvcluster.journal.format import TYPE_PUT
from kvcluster.journal.reader import RecordScan
from kvcluster.values import unpack_value

__all__ = ["JournalRecord", "Outcome", "Pipeline", "ReplyTap", "journal_writes"]

READ_EVERY = 5  # one request in this many reads back a key acknowledged before it started


@dataclass(frozen=True)
class Outcome:
    """How one request ended: `result` (a SET's timestamp, a GET's value) or `error`."""

    index: int
    op: str  # "set" or "get"
    key: str
    shard: int
    started: float  # time.time() when the request was issued (a window slot was free)
    ended: float  # time.time()
    result: Any = None
    error: BaseException | None = None


@dataclass
class Pipeline:
    """`requests` requests, at most `window` in flight: SETs of unique keys (value: the
    request's index), and every READ_EVERY-th a GET of a key acknowledged earlier."""

    namespace: AsyncNamespace
    requests: int
    window: int
    route: Callable[[str], int]  # key -> shard
    seed: int = 0
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    second_outcomes: list[Outcome] = field(default_factory=list)  # a request that ended twice
    acked: dict[str, int] = field(default_factory=dict)  # key -> timestamp of its acknowledged SET
    acked_keys: list[str] = field(default_factory=list)  # the same keys, in the order they were acknowledged
    attempted: dict[str, int] = field(default_factory=dict)  # key -> the value its SET carried
    in_flight: collections.Counter[int] = field(default_factory=collections.Counter)  # shard -> requests
    _milestones: dict[int, asyncio.Event] = field(default_factory=dict)
    _loads: list[tuple[int, int, asyncio.Event]] = field(default_factory=list)
    _hold: int | None = None  # requests from this index on wait (see hold_from)
    _hold_moved: asyncio.Event = field(default_factory=asyncio.Event)

    @staticmethod
    def key(index: int) -> str:
        return f"p-{index:07d}"

    def reached(self, done: int) -> asyncio.Event:
        """An event set once `done` requests have ended."""
        event = self._milestones.setdefault(done, asyncio.Event())
        if len(self.outcomes) >= done:
            event.set()
        return event

    def loaded(self, shard: int, count: int) -> asyncio.Event:
        """An event set once `count` requests to `shard` are in flight at once."""
        event = asyncio.Event()
        if self.in_flight[shard] >= count:
            event.set()
        else:
            self._loads.append((shard, count, event))
        return event

    def hold_from(self, index: int | None) -> None:
        """Requests from `index` on wait to be issued until the hold moves past them (None:
        no hold). A test that injects faults at points of the run holds the requests
        beyond the next point until its fault is done: a fast client must not finish the
        whole run while the test waits for a restarted process."""
        self._hold = index
        moved, self._hold_moved = self._hold_moved, asyncio.Event()
        moved.set()

    async def run(self, bound: float) -> list[asyncio.Task[None]]:
        """Issue every request; return the tasks left pending after `bound` seconds."""
        slots = asyncio.Semaphore(self.window)
        rng = random.Random(self.seed)
        tasks = [asyncio.create_task(self._one(index, slots, rng)) for index in range(self.requests)]
        _done, pending = await asyncio.wait(tasks, timeout=bound)
        return list(pending)

    async def _one(self, index: int, slots: asyncio.Semaphore, rng: random.Random) -> None:
        while self._hold is not None and index >= self._hold:
            await self._hold_moved.wait()
        async with slots:
            if index % READ_EVERY == READ_EVERY - 1 and self.acked_keys:
                op, key = "get", rng.choice(self.acked_keys)  # acknowledged before this request
            else:
                op, key = "set", self.key(index)
                self.attempted[key] = index
            shard = self.route(key)
            self._issued(shard)
            started = time.time()
            try:
                if op == "set":
                    result: Any = await self.namespace.set(key, index)
                    self.acked[key] = result
                    self.acked_keys.append(key)
                else:
                    result = await self.namespace.get(key)
            except BaseException as exc:  # anything, KVError or not, is this request's one outcome
                self._record(Outcome(index, op, key, shard, started, time.time(), error=exc))
                if not isinstance(exc, Exception):
                    raise  # cancellation and the like still propagate
            else:
                self._record(Outcome(index, op, key, shard, started, time.time(), result=result))
            finally:
                self.in_flight[shard] -= 1

    def _issued(self, shard: int) -> None:
        self.in_flight[shard] += 1
        for load in self._loads:
            if load[0] == shard and self.in_flight[shard] >= load[1]:
                load[2].set()
                self._loads.remove(load)
                return

    def _record(self, outcome: Outcome) -> None:
        if outcome.index in self.outcomes:
            self.second_outcomes.append(outcome)
            return
        self.outcomes[outcome.index] = outcome
        event = self._milestones.get(len(self.outcomes))
        if event is not None:
            event.set()

    def errors_by_kind(self) -> dict[str, int]:
        kinds = collections.Counter(type(o.error).__name__ for o in self.outcomes.values() if o.error is not None)
        return dict(sorted(kinds.items()))

    def foreign_errors(self) -> list[Outcome]:
        """Requests that ended in something other than a KVError: a bug in the client."""
        return [o for o in self.outcomes.values() if o.error is not None and not isinstance(o.error, KVError)]


class ReplyTap:
    """Counts every reply the asyncio client decodes, by sequence number — late ones too,
    which the client drops — so a request answered twice shows up even when its caller
    saw only one answer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.replies: collections.Counter[int] = collections.Counter()
        decode = decode_reply  # the one aio_links imported

        def counting(payload: bytes, options: dict[str, Any]) -> Reply:
            reply = decode(payload, options)
            self.replies[reply.seq] += 1
            return reply

        monkeypatch.setattr(aio_links, "decode_reply", counting)

    def answered_twice(self) -> dict[int, int]:
        return {seq: n for seq, n in self.replies.items() if n > 1}


class JournalRecord(NamedTuple):
    shard: int
    rtype: int  # kvcluster.journal.format.TYPE_*
    ts: int
    value: Any  # a PUT's value, unpacked (None for other types)


def journal_writes(data_dir: str | os.PathLike[str], shards: int, ns: str) -> dict[str, list[JournalRecord]]:
    """Every record of namespace `ns` in the shards' journals (the cluster stopped), by
    key. A write applied twice journals two records. Refuses journals that rotated: a
    compacted journal repeats the live keys."""
    data = DataDir.at(os.fspath(data_dir))
    found: dict[str, list[JournalRecord]] = collections.defaultdict(list)
    for shard in range(shards):
        directory = data.shard_dir(shard)
        assert not list_archives(directory) and not list_raw_archives(directory), f"{directory} rotated"
        path = Path(directory) / "journal"
        scan = RecordScan(path.read_bytes(), str(path))
        for rtype, record_ns, key, ts, value in scan:
            if record_ns == ns.encode():
                unpacked = unpack_value(value) if rtype == TYPE_PUT else None
                found[key.decode()].append(JournalRecord(shard, rtype, ts, unpacked))
        assert scan.damage is None, str(scan.damage)
    return dict(found)
