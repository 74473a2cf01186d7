"""kill -9 of a shard, of the coordinator, and of every process, during writes: no
acknowledged write is lost, and the cluster serves again."""

from __future__ import annotations

import functools
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvtest import scale
from kvtest.prefix import KeyedWriter, prefix_violations
from kvtest.process_faults import kill_random_live_shard, restarted, shard_pids
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import Cluster, KVError, Namespace, Timeout
from kvcluster.process import pid_alive
from kvcluster.router.jump import shard_for

pytestmark = [pytest.mark.crash, pytest.mark.slow]


class Writer(threading.Thread):
    """Writes unique keys one after another, recording which writes were acknowledged."""

    def __init__(self, namespace: Namespace, prefix: str) -> None:
        super().__init__(daemon=True)
        self.namespace = namespace
        self.prefix = prefix
        self.acked: dict[str, int] = {}
        self.unknown: set[str] = set()  # timed out or connection lost: outcome unknown
        self.errors: list[KVError] = []
        self.stop = threading.Event()
        self.progress = threading.Condition()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"{self.prefix}-{i:07d}"
            try:
                self.acked[key] = self.namespace.set(key, {"i": i})
            except Timeout:
                self.unknown.add(key)
            except KVError as exc:
                self.errors.append(exc)
            with self.progress:
                self.progress.notify_all()
            i += 1

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self.progress:
            while len(self.acked) < count:
                if not self.progress.wait(deadline - time.monotonic()):
                    raise AssertionError(f"only {len(self.acked)} writes acknowledged in {timeout} s")


def check_all_present(namespace: Namespace, acked: dict[str, int]) -> None:
    for key, ts in acked.items():
        found = namespace.get_versioned(key)
        assert found is not None, f"acknowledged write {key} lost"
        assert found[1] == ts


@pytest.fixture
def small_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = kvcluster.start(tmp_path / "data", shards=2, durability="interval")
    yield cluster
    cluster.stop()


def test_kill_9_of_a_shard_during_writes(small_cluster: Cluster) -> None:
    client = small_cluster.connect(timeout=3.0)
    writer = Writer(client.namespace("default"), "shard-kill")
    writer.start()
    pids = shard_pids(small_cluster)
    for cycle in range(scale(3, 20)):
        writer.wait_for(len(writer.acked) + 200)
        shard = cycle % len(pids)
        victim = pids[shard]
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        wait_until(functools.partial(restarted, small_cluster, shard, victim))
        pids = shard_pids(small_cluster)
        writer.wait_for(len(writer.acked) + 200)  # writes flow again, to every shard
    writer.stop.set()
    writer.join()
    assert writer.errors == []
    check = small_cluster.connect().namespace("default")
    check_all_present(check, writer.acked)
    stats = small_cluster.connect().stats()
    assert sum(shard["restarts"] for shard in stats["shards"]) == scale(3, 20)


KILLS = scale(100, 1000)


def test_kill_9_of_a_random_shard_every_50_to_500_ms(tmp_path: Path) -> None:
    """Bar item 3: a random live shard killed every 50-500 ms (KILLS of them) under two
    writers. No acknowledged write is lost, no key holds a value never written to it,
    each shard's state is a gap-free prefix of each writer's writes to it, and the
    cluster serves after the last kill. The crash-loop backoff is capped at 0.25 s, so
    the kills (not the backoff) set the pace."""
    cluster = kvcluster.start(tmp_path / "data", shards=3, durability="interval", max_restart_delay=0.25)
    try:
        rng = random.Random(3)
        writers = [KeyedWriter(cluster, f"w{n}") for n in range(2)]
        for writer in writers:
            writer.start()
        killed: set[int] = set()
        for _ in range(KILLS):
            wait_until(lambda: kill_random_live_shard(cluster, rng, killed) is not None, "a live shard to kill")
            time.sleep(rng.uniform(0.05, 0.5))  # the fault schedule itself, not a wait for anything
        for writer in writers:
            writer.stop.set()
            writer.join(30)
            assert not writer.is_alive(), "a writer hung"
        wait_until(lambda: None not in shard_pids(cluster), "every shard serving again")
        with cluster.connect(timeout=10.0) as client:
            restarts = sum(shard["restarts"] for shard in client.stats()["shards"])
            assert restarts == KILLS
            check = client.namespace("default")
            for writer in writers:
                assert writer.outcomes.count(True) > KILLS // 2  # writes went on between the kills
                keys = writer.keys()
                found = {key: check.get(key) for key in keys}
                shard_of = {key: shard_for(b"default", key.encode(), 3) for key in keys}
                assert prefix_violations(writer, found, shard_of) == []
    finally:
        cluster.stop()


def test_kill_9_of_a_shard_during_concurrent_always_writes(tmp_path: Path) -> None:
    """Durability `always` with four clients writing at once: a shard's groups take
    writes from several connections (and wait briefly for more) before their one flush;
    no write is acknowledged before it, so none acknowledged is lost."""
    cluster = kvcluster.start(tmp_path / "data", shards=2, durability="always")
    try:
        writers = [Writer(cluster.connect(timeout=3.0).namespace("default"), f"w{n}") for n in range(4)]
        for writer in writers:
            writer.start()
        pids = shard_pids(cluster)
        for cycle in range(scale(2, 10)):
            for writer in writers:
                writer.wait_for(len(writer.acked) + 50)
            shard = cycle % len(pids)
            victim = pids[shard]
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            wait_until(functools.partial(restarted, cluster, shard, victim))
            pids = shard_pids(cluster)
        for writer in writers:
            writer.wait_for(len(writer.acked) + 50)  # writes flow again
            writer.stop.set()
        check = cluster.connect().namespace("default")
        for writer in writers:
            writer.join()
            assert writer.errors == []
            check_all_present(check, writer.acked)
    finally:
        cluster.stop()


def test_kill_9_of_the_coordinator_during_writes(small_cluster: Cluster) -> None:
    client = small_cluster.connect(timeout=3.0)
    writer = Writer(client.namespace("default"), "coordinator-kill")
    writer.start()
    before = shard_pids(small_cluster)
    for _ in range(scale(2, 10)):
        writer.wait_for(len(writer.acked) + 200)
        with small_cluster.connect() as admin:
            coordinator = admin.stats()["coordinator"]["pid"]
        os.kill(coordinator, signal.SIGKILL)
        writer.wait_for(len(writer.acked) + 200)  # the data path never needed it
        wait_until(functools.partial(_coordinator_replaced, small_cluster, coordinator))
    writer.stop.set()
    writer.join()
    assert writer.errors == []
    assert writer.unknown == set()  # no shard went down: every write was answered
    assert shard_pids(small_cluster) == before  # the new coordinator adopted the running shards
    with small_cluster.connect() as admin:
        admin.create_namespace("after-restart", max_keys=3)  # administration works again
        check_all_present(admin.namespace("default"), writer.acked)


def _coordinator_replaced(cluster: Cluster, old: int) -> bool:
    return _coordinator_pid(cluster) not in (None, old)


def _coordinator_pid(cluster: Cluster) -> int | None:
    try:
        with kvcluster.connect(cluster.data_dir, timeout=1.0) as client:
            return int(client.ping()["pid"])
    except KVError:
        return None


def test_kill_9_of_every_process_then_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cluster = kvcluster.start(data, shards=2, durability="interval")
    namespace = cluster.connect().create_namespace("kept", max_keys=10_000)
    acked = {f"k{i}": namespace.set(f"k{i}", i) for i in range(500)}
    with cluster.connect() as client:
        stats = client.stats()
    victims = [cluster.process.pid, stats["coordinator"]["pid"], *(s["pid"] for s in stats["shards"])]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    cluster.process.wait()
    cluster.stop()
    wait_until(lambda: not any(pid_alive(pid) for pid in victims))
    with kvcluster.start(data) as again:
        namespace = again.connect().namespace("kept")
        check_all_present(namespace, acked)
        assert namespace.stats()["max_keys"] == 10_000
