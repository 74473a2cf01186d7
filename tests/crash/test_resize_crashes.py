"""kill -9 at each crash-sensitive step of a resize — an old shard, a new shard, the
coordinator — and check that the cluster comes back consistent: N shards with every
key (rolled back) or M shards with every key (finished), each key on one shard, and
serving. The points are armed through KV_FAILPOINTS_DIR (kvcluster/failpoints.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kvtest.process_faults import serving
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import BatchMode, Client, Cluster, ClusterUnavailable, Timeout
from kvcluster.failpoints import arm

pytestmark = [pytest.mark.crash, pytest.mark.slow]

# (point, who dies, the outcome: "back" to N shards or "forward" to M)
POINTS = [
    ("coordinator.resize_recorded", "coordinator", "back"),
    ("shard.move_install", "new shard", "back"),
    ("shard.move_chunk", "old shard", "back"),
    ("shard.move_ready", "old shard", "back"),
    ("coordinator.resize_switch", "coordinator", "back"),
    ("coordinator.resize_switched", "coordinator", "forward"),
    ("shard.move_switch", "old shard", "forward"),
]


def settled(client: Client) -> bool:
    stats = serving(client)
    return stats is not None and stats["resize"] is None


@pytest.fixture
def armed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cluster, Path]]:
    points = tmp_path / "failpoints"
    points.mkdir()
    monkeypatch.setenv("KV_FAILPOINTS_DIR", str(points))
    cluster = kvcluster.start(tmp_path / "data", shards=2, durability="interval")
    yield cluster, points
    cluster.stop()


@pytest.mark.parametrize(("point", "who", "outcome"), POINTS, ids=[p[0] for p in POINTS])
def test_kill_9_mid_resize(armed: tuple[Cluster, Path], point: str, who: str, outcome: str) -> None:
    cluster, points = armed
    client = cluster.connect(timeout=10.0)
    namespace = client.create_namespace("users", max_keys=100_000)
    namespace.set_many({f"k-{i}": i for i in range(6000)}, BatchMode.BEST_EFFORT)
    state: dict[str, tuple[Any, int]] = namespace.get_all()
    arm(points, point)
    try:
        client.resize(shards=3)
        answer = "done"
    except ClusterUnavailable as exc:
        answer = "rolled back" if "rolled back" in str(exc) else "unknown"
    except Timeout:
        answer = "unknown"  # the coordinator died with the call
    assert not (points / point).exists(), f"{point} was not reached"
    with Client(cluster.data_dir, timeout=10.0) as fresh:
        wait_until(lambda: settled(fresh), f"the cluster settles after {point}")
        shards = fresh.stats()["shards"]
        expected = 2 if outcome == "back" else 3
        assert len(shards) == expected, (point, who, answer)
        if outcome == "back":
            assert answer != "done"
            assert not (Path(cluster.data_dir) / "shard-002").exists()
        users = fresh.namespace("users")
        assert users.get_all() == state  # every key, value and timestamp
        assert sum(shard["keys"] for shard in shards) == len(state)  # each on one shard
        ts = users.set("after", 1)
        assert users.get_versioned("after") == (1, ts)
        if outcome == "back":  # and it can grow afterwards
            assert fresh.resize(shards=3)["to"] == 3
            assert users.get_all() == {**state, "after": (1, ts)}
