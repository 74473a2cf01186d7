"""kill -9 at each step of two-phase commit — on a participant shard, on the coordinator,
on the client — and check that every cross-shard batch is on all its keys or on none,
and every acknowledged batch on all of them.

The cluster runs with KV_FAILPOINTS_DIR: each cycle arms one named point, and the
first process to reach it dies there (kvcluster/failpoints.py). 50 cycles by default,
300 under KV_LONG=1.
"""

from __future__ import annotations

import collections
import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvtest import scale
from kvtest.process_faults import point_taken, processes, serving
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import BatchFailed, BatchMode, Client, Cluster, ClusterUnavailable, Namespace, Timeout
from kvcluster.failpoints import arm

pytestmark = [pytest.mark.crash, pytest.mark.slow]

AON = BatchMode.ALL_OR_NOTHING
KEYS = [f"key-{i:02d}" for i in range(24)]  # spread over every shard
POINTS = (
    "shard.txn_prepare",  # before the PREPARE record is written
    "shard.txn_prepared",  # written, the vote not yet sent
    "coordinator.txn_decide",  # all voted yes; the decision not yet journaled
    "coordinator.txn_decided",  # journaled; the answer not yet sent
    "shard.txn_commit",  # decided; this participant has not journaled COMMIT
    "shard.txn_committed",  # journaled and applied; the ack not yet sent
)


def settled(client: Client) -> bool:
    """Every process serves, and no transaction is left prepared on any shard."""
    stats = serving(client)
    return stats is not None and all(s["transactions_prepared"] == 0 for s in stats["shards"])


def whole_batch(namespace: Namespace) -> int:
    """The generation every key holds; fails if the keys disagree (a torn batch)."""
    data = namespace.get_many(KEYS, AON).data
    generations = set(data.values())
    assert len(generations) == 1, f"a partial batch: {data}"
    return int(generations.pop())


@pytest.fixture
def armed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cluster, Path]]:
    points = tmp_path / "failpoints"
    points.mkdir()
    monkeypatch.setenv("KV_FAILPOINTS_DIR", str(points))  # the cluster's processes inherit it
    cluster = kvcluster.start(tmp_path / "data", shards=3, durability="interval")
    yield cluster, points
    cluster.stop()


def test_kill_9_at_every_two_phase_commit_step(armed: tuple[Cluster, Path]) -> None:
    cluster, points = armed
    client = cluster.connect(timeout=5.0)
    namespace = client.create_namespace("batches")
    namespace.set_many(dict.fromkeys(KEYS, 0), AON)
    held = 0
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    cycles = scale(50, 300)
    for cycle in range(1, cycles + 1):
        point = POINTS[cycle % len(POINTS)]
        before = processes(client)
        arm(points, point)
        try:
            namespace.set_many(dict.fromkeys(KEYS, cycle), AON)
            outcome = "acknowledged"
        except BatchFailed as exc:
            outcome = "refused"  # definite: nothing applied
            refusal = exc
        except (Timeout, ClusterUnavailable):
            outcome = "unknown"
        wait_until(functools.partial(point_taken, points, point), f"cycle {cycle}: {point} reached")
        wait_until(functools.partial(settled, client), f"cycle {cycle}: the cluster recovers after {point}")
        after = processes(client)
        replaced = [name for name in before if before[name] != after[name]]
        assert len(replaced) == 1 and replaced[0].startswith(point.split(".")[0]), (point, before, after)
        now = whole_batch(namespace)
        if outcome == "acknowledged":
            assert now == cycle, f"cycle {cycle} ({point}): an acknowledged batch is missing"
        elif outcome == "refused":
            assert now == held, f"cycle {cycle} ({point}): a refused batch was applied: {refusal!r} {refusal.errors}"
        else:
            assert now in (held, cycle)
        held = now
        seen[point, outcome] += 1
    # Both ends of the decision were crossed: some batches committed through a crash, some aborted.
    assert seen["shard.txn_committed", "acknowledged"] + seen["shard.txn_commit", "acknowledged"] > 0
    assert seen["shard.txn_prepared", "refused"] > 0


CHILD = """
import sys, kvcluster
from kvcluster import BatchMode
namespace = kvcluster.connect(sys.argv[1], timeout=10.0).namespace(sys.argv[2])
namespace.set_many(dict.fromkeys(sys.argv[3].split(","), 1), BatchMode.ALL_OR_NOTHING)
"""


@pytest.mark.parametrize(("point", "expected"), [("client.txn_prepared", 0), ("client.txn_decided", 1)])
def test_a_client_killed_mid_batch_leaves_all_of_it_or_none(
    cluster: Cluster, client: Client, fresh_ns: Namespace, point: str, expected: int
) -> None:
    fresh_ns.set_many(dict.fromkeys(KEYS, 0), AON)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(cluster.data_dir), fresh_ns.name, ",".join(KEYS)],
        env={**os.environ, "KV_FAILPOINTS": f"{point}=kill"},
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert child.returncode == -9, child.stderr.decode()
    wait_until(lambda: settled(client), "the shards resolve the vanished client's transaction")
    assert whole_batch(fresh_ns) == expected
