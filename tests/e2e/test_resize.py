"""Online resize (grow only): every key stays readable with its value and timestamp,
only the keys whose shard changes move, reads and writes go on during the move, and
batches stay atomic."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import BatchFailed, BatchMode, Client, Cluster, ClusterUnavailable, InvalidRequest, Scope

pytestmark = pytest.mark.slow

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KVCLUSTER = os.path.join(os.path.dirname(sys.executable), "kvcluster")
AON = BatchMode.ALL_OR_NOTHING


def shard_keys(client: Client) -> list[int]:
    return [shard["keys"] for shard in client.stats()["shards"]]


def populate(client: Client, name: str, count: int) -> dict[str, tuple[Any, int]]:
    namespace = client.create_namespace(name)
    items = {f"k-{i}": {"i": i} for i in range(count)}
    namespace.set_many(items, BatchMode.BEST_EFFORT)
    namespace.set("eph", "in memory", scope=Scope.EPHEMERAL)
    return namespace.get_all()


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[Callable[[int], Cluster]]:
    started: list[Cluster] = []

    def start(shards: int) -> Cluster:
        cluster = kvcluster.start(tmp_path / f"data-{len(started)}", shards=shards, durability="interval")
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.mark.parametrize(("before", "after", "count"), [(2, 3, 3000), (4, 5, 5000)])
def test_resize_moves_only_the_keys_whose_shard_changes(
    start_cluster: Callable[[int], Cluster], before: int, after: int, count: int
) -> None:
    client = start_cluster(before).connect()
    state = populate(client, "users", count)
    summary = client.resize(shards=after)
    assert (summary["from"], summary["to"]) == (before, after)
    moved = summary["moved"] / len(state)
    assert abs(moved - 1 / after) <= 0.1 / after, f"moved {moved:.3f} of the keys, not about 1/{after}"
    namespace = client.namespace("users")
    assert namespace.get_all() == state  # every key, with its value and timestamp
    assert sum(shard_keys(client)) == len(state)  # and on one shard only
    assert len(namespace) == len(state)
    stats = client.stats()
    assert len(stats["shards"]) == after and stats["resize"] is None and stats["ready"]
    # A client that still holds the old map is told to refresh, and routes again.
    with Client(client.target.address) as fresh:
        fresh.core.map = type(fresh.core.map)(1, fresh.core.map.endpoints[:before], fresh.core.map.coordinator)
        fresh._links.clear()
        fresh_ns = fresh.namespace("users")
        assert all(fresh_ns.get_versioned(key) == state[key] for key in list(state)[:200])
    ts = namespace.set("k-0", "after")
    assert namespace.get_versioned("k-0") == ("after", ts) and ts > state["k-0"][1]


def test_refused_resizes(start_cluster: Callable[[int], Cluster]) -> None:
    client = start_cluster(2).connect()
    populate(client, "users", 20_000)
    for shards in (1, 2):
        with pytest.raises(InvalidRequest, match="grows the cluster only"):
            client.resize(shards=shards)
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(first=client.resize(shards=3)))
    thread.start()
    with kvcluster.connect(client.target.address) as other:
        wait_until(lambda: other.stats()["resize"] is not None, "the resize shows in the status")
        with pytest.raises(ClusterUnavailable, match="already running"):
            other.resize(shards=4)
    thread.join(60)
    assert outcome["first"]["to"] == 3


def test_async_client_resizes(start_cluster: Callable[[int], Cluster]) -> None:
    cluster = start_cluster(2)
    state = populate(cluster.connect(), "users", 500)

    async def main() -> dict[str, tuple[Any, int]]:
        async with await kvcluster.AsyncClient.connect(cluster.data_dir) as client:
            namespace = await client.namespace("users")
            await namespace.get("k-1")
            summary = await client.resize(shards=3)
            assert summary["to"] == 3
            assert await namespace.count() == len(state)
            return await namespace.get_all()

    assert asyncio.run(main()) == state


def _child(kind: str, cluster: Cluster, stop: Path, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "kvtest.resize_children", kind, str(cluster.data_dir), "users", str(stop), *extra]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def test_reads_and_writes_go_on_during_a_resize(start_cluster: Callable[[int], Cluster], tmp_path: Path) -> None:
    cluster = start_cluster(2)
    client = cluster.connect()
    count = 5000
    state = populate(client, "users", count)
    stop = tmp_path / "stop"
    writer = _child("writer", cluster, stop)
    reader = _child("reader", cluster, stop, str(count))
    assert writer.stdout is not None and reader.stdout is not None
    acked: dict[str, int] = {}
    failed: list[str] = []

    def collect() -> None:
        assert writer.stdout is not None
        for line in writer.stdout:
            key, outcome, *_rest = line.split(maxsplit=2)
            if outcome.isdigit():
                acked[key] = int(outcome)
            elif outcome == "!":
                failed.append(line)

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    wait_until(lambda: len(acked) >= 200, "the writer writes")
    summary = client.resize(shards=3)
    written = len(acked)
    wait_until(lambda: len(acked) >= written + 200, "the writer writes after the resize")
    stop.touch()
    assert writer.wait(30) == 0 and reader.wait(30) == 0
    collector.join(10)
    report = json.loads(reader.stdout.read().strip().splitlines()[-1])
    assert report["misses"] == 0 and report["errors"] == [], report
    assert report["reads"] > 0
    assert failed == []
    namespace = client.namespace("users")
    everything = namespace.get_all()
    lost = {key: ts for key, ts in acked.items() if key not in everything or everything[key][1] != ts}
    assert not lost, f"acknowledged writes lost or changed: {sorted(lost)[:5]}"
    for key, found in state.items():
        assert everything[key] == found
    assert sum(shard_keys(client)) == len(everything)
    assert summary["moved"] > 0


def test_batches_stay_atomic_during_a_resize(start_cluster: Callable[[int], Cluster]) -> None:
    client = start_cluster(2).connect()
    namespace = client.create_namespace("batches")
    keys = [f"b-{i:02d}" for i in range(24)]
    namespace.set_many(dict.fromkeys(keys, 0), AON)
    populate(client, "users", 10_000)  # keys to move: the resize takes a while
    stop = threading.Event()
    acked: list[int] = []
    torn: list[dict[str, Any]] = []

    def batches() -> None:
        with kvcluster.connect(client.target.address) as own:
            mine = own.namespace("batches")
            generation = 0
            while not stop.is_set():
                generation += 1
                try:
                    mine.set_many(dict.fromkeys(keys, generation), AON)
                    acked.append(generation)
                except (BatchFailed, ClusterUnavailable):
                    pass  # refused (a conflict with the move): nothing applied
                data = mine.get_many(keys, AON).data
                if len(set(data.values())) != 1:
                    torn.append(data)

    thread = threading.Thread(target=batches)
    thread.start()
    wait_until(lambda: len(acked) >= 5, "batches commit")
    client.resize(shards=3)
    seen = len(acked)
    wait_until(lambda: len(acked) >= seen + 5, "batches commit after the resize")
    stop.set()
    thread.join(30)
    assert torn == []
    data = namespace.get_many(keys, AON).data
    assert set(data.values()) == {acked[-1]}


def test_cli_resize(start_cluster: Callable[[int], Cluster]) -> None:
    cluster = start_cluster(2)
    state = populate(cluster.connect(), "users", 300)
    result = subprocess.run(
        [KVCLUSTER, "resize", "--shards", "3", "--json", "--data-dir", str(cluster.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["to"] == 3
    refused = subprocess.run(
        [KVCLUSTER, "resize", "--shards", "3", "--data-dir", str(cluster.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1 and "InvalidRequest" in refused.stderr
    status = subprocess.run(
        [KVCLUSTER, "status", "--json", "--data-dir", str(cluster.data_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert len(json.loads(status.stdout)["shards"]) == 3
    with cluster.connect() as client:
        assert client.namespace("users").get_all() == state
