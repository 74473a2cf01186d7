"""Bar item 11, ZeroMQ peer faults: shards killed (-9) and restarted by the supervisor
while 10,000 requests are pipelined through the asyncio client — over the shards'
Unix streams, and over ZeroMQ through the router, whose sockets queue the requests
meant for a dead shard and hand them to its successor.

Every request ends in exactly one outcome (its reply or one error; none pending, none
twice, and no sequence number answered twice on the wire), and a write is applied at
most once — exactly once when it was acknowledged: each SET writes a key of its own,
and after the run every shard's journal holds at most one record per key (a write
applied twice, re-delivered or not, journals a second one). No value appears that was
never written, and every acknowledged write is there after the kills."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from kvtest import scale
from kvtest.network import free_port
from kvtest.pipelining import Outcome, Pipeline, ReplyTap, journal_writes
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import AsyncClient, Client, Cluster
from kvcluster.client.core import Call
from kvcluster.codec import Op
from kvcluster.journal.format import TYPE_PUT

pytestmark = [pytest.mark.crash, pytest.mark.slow]

SHARDS = 3
NAMESPACE = "pipelined"
REQUESTS = scale(10_000, 100_000)
KILLS = scale(4, 24)
WINDOW = 256  # requests in flight at once
VICTIM_LOAD = WINDOW // SHARDS // 4  # a shard is killed once this many requests to it are in flight
CLIENT_TIMEOUT = 5.0  # seconds; a restart takes ~1 s here, so requests queued meanwhile are answered
BOUND = float(scale(120, 900))  # seconds for the whole run: whatever is pending then fails the test


@dataclass(frozen=True)
class Kill:
    shard: int
    pid: int
    killed_at: float  # time.time() just before the signal went
    dead_at: float  # time.time(): the process was gone

    def in_flight(self, pipeline: Pipeline, shard: int | None = None) -> int:
        """Requests issued before the kill and ended after it (to `shard`, or to any)."""
        return sum(
            1 for o in pipeline.outcomes.values() if o.started <= self.killed_at < o.ended and shard in (None, o.shard)
        )


@pytest.fixture(params=["stream", "router"])
def routed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    """A 3-shard cluster, and the address the pipelining client connects to: the data
    directory (Unix streams to the shards) or the router's tcp:// address (ZeroMQ)."""
    listen = f"tcp://127.0.0.1:{free_port()}" if request.param == "router" else None
    cluster = kvcluster.start(
        tmp_path / "data",
        shards=SHARDS,
        durability="interval",
        buffer_size=16 << 20,  # never rotates in this test: the journal is all the history
        listen=listen,
        max_restart_delay=0.5,  # a shard killed again soon after its restart comes back soon
    )
    try:
        cluster.connect().create_namespace(NAMESPACE)
        yield cluster, listen or cluster.data_dir
    finally:
        cluster.stop()


@pytest.mark.timeout(BOUND + 120)
def test_every_pipelined_request_ends_once_and_every_write_applies_once(
    routed: tuple[Cluster, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, address = routed
    tap = ReplyTap(monkeypatch)
    started = time.monotonic()
    pipeline, kills, pending = asyncio.run(_pipelined_kills(cluster, address))
    elapsed = time.monotonic() - started

    # -- every request ended exactly once --------------------------------------------
    assert pending == 0, f"{pending} requests still pending after {BOUND} s"
    assert pipeline.second_outcomes == [], f"requests that ended twice: {pipeline.second_outcomes[:5]}"
    assert len(pipeline.outcomes) == REQUESTS
    assert pipeline.foreign_errors() == [], "requests that failed with something other than a KVError"
    assert tap.answered_twice() == {}, "sequence numbers answered twice on the wire"
    assert -1 not in tap.replies, "a reply that names no request"

    # -- the kills hit a full pipeline, and the restarted shards took over ---------------
    assert len(kills) == KILLS
    in_flight = [(kill.in_flight(pipeline), kill.in_flight(pipeline, kill.shard)) for kill in kills]
    assert all(to_victim > 0 for _total, to_victim in in_flight), in_flight
    while_down = _issued_while_down(pipeline, kills)
    assert while_down, "no request was sent to a shard while it was down, and answered by its successor"

    # -- reads during the faults never saw a lost or foreign value -----------------------
    for outcome in pipeline.outcomes.values():
        if outcome.op == "get" and outcome.error is None:
            assert outcome.result == pipeline.attempted[outcome.key], f"read {outcome}"

    # -- after the kills: every acknowledged write, nothing never written ---------------
    with cluster.connect(timeout=10.0) as client:
        wait_until(functools.partial(_all_serving, client), "every shard serving again")
        stored = client.namespace(NAMESPACE).get_all()
    for key, ts in pipeline.acked.items():
        assert key in stored, f"acknowledged write {key} lost"
        assert stored[key] == (pipeline.attempted[key], ts), f"{key}: {stored[key]}, acknowledged at {ts}"
    for key, (value, _ts) in stored.items():
        assert pipeline.attempted.get(key) == value, f"{key} holds {value!r}, never written to it"

    # -- each write applied once: one journal record per key -----------------------------
    cluster.stop()
    records = journal_writes(cluster.data_dir, SHARDS, NAMESPACE)
    twice = {key: found for key, found in records.items() if len(found) > 1}
    assert twice == {}, f"{len(twice)} writes applied more than once, e.g. {sorted(twice.items())[:3]}"
    for key, [record] in records.items():
        assert record.rtype == TYPE_PUT and record.value == pipeline.attempted.get(key), f"{key}: {record}"
        assert stored.get(key) == (record.value, record.ts), f"{key}: journaled {record}, served {stored.get(key)}"
    assert set(pipeline.acked) <= set(records)
    unknown = len(pipeline.attempted) - len(pipeline.acked)
    print(
        f"\n{address[:5]}: {REQUESTS} requests, {KILLS} kills in {elapsed:.1f} s;"
        f" errors {pipeline.errors_by_kind()}; {len(pipeline.acked)} writes acknowledged,"
        f" {unknown} unknown of which {len(records) - len(pipeline.acked)} applied;"
        f" {len(while_down)} sent while their shard was down and answered by its successor"
    )


async def _pipelined_kills(cluster: Cluster, address: str) -> tuple[Pipeline, list[Kill], int]:
    """Run the pipeline and the kills beside it; the pipeline, the kills, and how many
    requests were left pending at the bound (cancelled then)."""
    client = await AsyncClient.connect(address, timeout=CLIENT_TIMEOUT)
    try:
        namespace = await client.namespace(NAMESPACE)
        ns = NAMESPACE.encode()
        pipeline = Pipeline(namespace, REQUESTS, WINDOW, lambda key: client.core.map.shard_for(ns, key.encode()))
        pipeline.hold_from(_kill_point(0))
        run = asyncio.create_task(pipeline.run(BOUND))
        kills = await asyncio.wait_for(_kill_shards(cluster, pipeline), BOUND)
        pending = await run
        for task in pending:
            task.cancel()
        return pipeline, kills, len(pending)
    finally:
        await client.close()


async def _kill_shards(cluster: Cluster, pipeline: Pipeline) -> list[Kill]:
    """KILLS kills, spread evenly over the requests, a different shard each time, each
    with requests to it in flight; each waits for the victim's successor to serve
    before the next (the pipeline goes on meanwhile)."""
    kills: list[Kill] = []
    with cluster.connect(timeout=5.0) as admin:  # used from one worker thread at a time
        for n in range(KILLS):
            shard = n % SHARDS
            pid = await asyncio.to_thread(_serving_pid, admin, shard)
            # The requests wait at each kill's point until it comes; a fast client would
            # otherwise end the run while the test waits for a restarted shard. Released,
            # they run on to the next point, also while the victim is down.
            await pipeline.reached(_kill_point(n)).wait()
            loaded = pipeline.loaded(shard, VICTIM_LOAD)
            pipeline.hold_from(_kill_point(n + 1) if n + 1 < KILLS else None)
            await loaded.wait()
            killed_at = time.time()
            os.kill(pid, signal.SIGKILL)
            await asyncio.to_thread(wait_until, functools.partial(_gone, pid), f"shard {shard} (pid {pid}) gone")
            kills.append(Kill(shard, pid, killed_at, time.time()))
            await asyncio.to_thread(_serving_pid, admin, shard)  # its successor serves
        await asyncio.to_thread(wait_until, functools.partial(_all_serving, admin), "every shard serving again")
    return kills


def _kill_point(n: int) -> int:
    """The number of ended requests after which the n-th kill is made."""
    return REQUESTS * (n + 1) // (KILLS + 1)


def _issued_while_down(pipeline: Pipeline, kills: list[Kill]) -> list[Outcome]:
    """Requests that succeeded though they were issued to a shard after its death and
    before its successor had answered any request: the successor took them over
    (through the router: ZeroMQ had queued them for the dead shard)."""
    successes = sorted((o for o in pipeline.outcomes.values() if o.error is None), key=lambda o: o.ended)
    taken_over: list[Outcome] = []
    for kill in kills:
        answered = [o.ended for o in successes if o.shard == kill.shard and o.ended >= kill.dead_at]
        first_answer = answered[0] if answered else float("inf")
        taken_over += [o for o in successes if o.shard == kill.shard and kill.dead_at <= o.started < first_answer]
    return taken_over


def _serving_pid(client: Client, shard: int) -> int:
    """The pid of the process serving `shard`, asked of the shard itself once it serves
    (the coordinator's stats wait up to 2 s for a shard that is restarting)."""
    return int(client.run(Call(shard, Op.PING, (), dict, timeout=30.0))["pid"])


def _shards(client: Client) -> list[dict[str, Any]]:
    return list(client.stats()["shards"])


def _all_serving(client: Client) -> bool:
    return all(shard["pid"] is not None and shard["ready"] for shard in _shards(client))


def _gone(pid: int) -> bool:
    """Dead and reaped (the coordinator reaps its shards at once). Not merely a zombie:
    after SIGKILL the main thread can be one while another thread still exits, holding
    the process's sockets open — a client connecting then is reset a moment later."""
    return not psutil.pid_exists(pid)
