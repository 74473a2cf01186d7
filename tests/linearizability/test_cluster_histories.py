"""Histories from concurrent clients on a real cluster, checked for linearizability per
key: with no faults, with a shard paused (SIGSTOP, then SIGCONT) past the clients'
timeout, and with a shard killed (SIGKILL) and restarted. Writes that time out or lose
their connection count as of unknown outcome (they may apply later, or never)."""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kvtest import scale
from kvtest.linearizability import Operation, Recorder, check
from kvtest.process_faults import paused, restarted, shard_pid
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import Cluster, KVError

pytestmark = [pytest.mark.crash, pytest.mark.slow]

KEYS = 200
CLIENTS = 4  # operations per history: 100 per key (CI), 1,000 per key (KV_LONG=1)
TIMEOUT = 0.5  # seconds: short, so that a paused shard produces timeouts


class Client(threading.Thread):
    """One client with a connection of its own: random gets, sets (each value unique)
    and deletes on KEYS keys, every call recorded."""

    def __init__(self, cluster: Cluster, number: int, operations: int, prefix: str) -> None:
        super().__init__(daemon=True)
        self.namespace = cluster.connect(timeout=TIMEOUT).namespace("default")
        self.recorder = Recorder(number)
        self.operations = operations
        self.prefix = prefix
        self.done = 0
        self.unknown = 0
        self.rng = random.Random(number)

    def run(self) -> None:
        ns, rng = self.namespace, self.rng
        for i in range(self.operations):
            key = f"{self.prefix}{rng.randrange(KEYS)}"
            draw = rng.random()
            kind = "get" if draw < 0.5 else "set" if draw < 0.9 else "delete"
            value = f"c{self.recorder.client}-{i}" if kind == "set" else None
            with self.recorder.call(kind, key, value) as out:
                try:
                    if kind == "get":
                        out["output"] = ns.get(key)
                    elif kind == "set":
                        ns.set(key, value)
                    else:
                        out["output"] = ns.delete(key)
                except KVError:
                    # a timeout, a lost connection, a shard restarting: the outcome is unknown
                    out["unknown"] = True
                    self.unknown += 1
            self.done += 1


def run_history(
    cluster: Cluster, prefix: str, fault: Callable[[list[Client]], None] | None
) -> tuple[list[Operation], int]:
    per_client = scale(KEYS * 100, KEYS * 1000) // CLIENTS
    clients = [Client(cluster, n, per_client, prefix) for n in range(CLIENTS)]
    for client in clients:
        client.start()
    if fault is not None:
        wait_until(lambda: sum(c.done for c in clients) >= per_client)  # a quarter of the way in
        fault(clients)
    for client in clients:
        client.join(120)
        assert not client.is_alive(), "a client hung"
    operations = [op for client in clients for op in client.recorder.operations]
    return operations, sum(client.unknown for client in clients)


@pytest.fixture
def two_shards(tmp_path: Path) -> Iterator[Cluster]:
    with kvcluster.start(tmp_path / "data", shards=2, durability="interval") as cluster:
        yield cluster


def assert_linearizable(operations: list[Operation]) -> None:
    violations = check(operations)
    assert not violations, "\n\n".join(str(v) for v in violations[:3])


def test_concurrent_clients_without_faults(two_shards: Cluster) -> None:
    operations, unknown = run_history(two_shards, "calm-", None)
    assert unknown == 0
    assert len(operations) == scale(KEYS * 100, KEYS * 1000) // CLIENTS * CLIENTS
    assert_linearizable(operations)


def test_a_shard_paused_past_the_clients_timeout(two_shards: Cluster) -> None:
    pid = shard_pid(two_shards, 0)
    assert pid is not None

    def pause(clients: list[Client]) -> None:
        with paused(pid):  # until every client has timed out on it at least once
            wait_until(lambda: all(c.unknown for c in clients), "a timeout in every client", timeout=30)

    operations, unknown = run_history(two_shards, "paused-", pause)
    assert unknown > 0  # the pause was felt
    assert_linearizable(operations)


def test_a_shard_killed_and_restarted(two_shards: Cluster) -> None:
    pid = shard_pid(two_shards, 1)
    assert pid is not None

    def kill(clients: list[Client]) -> None:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: restarted(two_shards, 1, pid), "the shard restarted")

    operations, _unknown = run_history(two_shards, "killed-", kill)
    assert_linearizable(operations)
