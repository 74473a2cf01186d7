"""Named kill points (bar item 4): a live cluster under write load is killed at each
named step of the write path — journal append, flush, acknowledgement — of journal
rotation (flush, next journal written, link, rename, directory fsync), of archiving
(write, fsync, rename, unlink) and of a snapshot (fsync, rename), many times over.

The cluster runs with KV_FAILPOINTS_DIR: each cycle arms one point and the first
process to reach it dies there (kvcluster/failpoints.py). Checked as for random kills
(bar item 3): no acknowledged write is lost, no key holds a value never written to it,
each shard's state is a gap-free prefix of each writer's writes to it, and the
cluster serves and snapshots after. The two-phase-commit points are exercised in
test_batch_crashes.py. Each point is hit CYCLES_PER_POINT times: 2 in CI, 20 long.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvtest import scale
from kvtest.prefix import KeyedWriter, prefix_violations
from kvtest.process_faults import point_taken, serving
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import Client, Cluster, KVError
from kvcluster.failpoints import arm
from kvcluster.router.jump import shard_for

pytestmark = [pytest.mark.crash, pytest.mark.slow]

SHARDS = 2
CYCLES_PER_POINT = scale(2, 20)
POINTS = (
    "journal.appended",  # a record is in the journal's map; not applied, not flushed
    "journal.flushed",  # msync returned; nothing acknowledged yet
    "shard.replying",  # a group applied and flushed; its replies not yet sent
    "rotate.begin",  # the journal is full; nothing of the rotation done
    "rotate.old_flushed",  # the retiring journal is on disk
    "rotate.next_written",  # the next journal is written and fsynced, not yet linked
    "rotate.old_linked",  # the retiring journal has its archive name; no rename yet
    "rotate.next_installed",  # the rename switched journals and the directory is fsynced
    "archive.written",  # the compressed archive is in its temp file
    "archive.synced",  # ... and fsynced, not yet renamed
    "archive.renamed",  # the archive is in place; the raw journal not yet removed
    "archive.raw_unlinked",  # the raw journal is unlinked; the directory not yet fsynced
    "snapshot.synced",  # a snapshot part is written and fsynced, not yet renamed
    "snapshot.renamed",  # renamed into place, the directory not yet fsynced
)


@pytest.fixture
def armed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cluster, Path]]:
    points = tmp_path / "failpoints"
    points.mkdir()
    monkeypatch.setenv("KV_FAILPOINTS_DIR", str(points))  # the cluster's processes inherit it
    # A 16 KiB journal rotates (and archives) every few hundred writes; `always` makes
    # every group flush, so each point comes round quickly.
    cluster = kvcluster.start(
        tmp_path / "data", shards=SHARDS, durability="always", buffer_size=16 << 10, max_restart_delay=0.25
    )
    yield cluster, points
    cluster.stop()


def restarts(client: Client) -> int:
    return sum(int(shard["restarts"]) for shard in client.stats()["shards"])


def test_kill_9_at_every_named_point_under_write_load(armed: tuple[Cluster, Path], tmp_path: Path) -> None:
    cluster, points = armed
    client = cluster.connect(timeout=10.0)
    writers = [KeyedWriter(cluster, f"w{n}") for n in range(2)]
    for writer in writers:
        writer.start()
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    hits: collections.Counter[str] = collections.Counter()
    snapshot_failures = 0
    for cycle in range(CYCLES_PER_POINT * len(POINTS)):
        point = POINTS[cycle % len(POINTS)]
        before = restarts(client)
        arm(points, point)
        if point.startswith("snapshot."):
            try:
                client.save_snapshot(snapshots / f"{point}.kvs")
            except KVError:  # the process writing it died: the snapshot fails, says so
                snapshot_failures += 1
        wait_until(functools.partial(point_taken, points, point), f"cycle {cycle}: {point} reached")
        wait_until(lambda: serving(client) is not None, f"cycle {cycle}: the cluster serves after {point}")
        if not point.startswith("snapshot."):  # a snapshot part is written by a shard's child
            assert restarts(client) == before + 1, f"{point} killed no shard"
        hits[point] += 1
    for writer in writers:
        writer.stop.set()
        writer.join(30)
        assert not writer.is_alive(), "a writer hung"
    assert set(hits.values()) == {CYCLES_PER_POINT}
    assert snapshot_failures > 0
    check = client.namespace("default")
    for writer in writers:
        assert writer.outcomes.count(True) > len(POINTS) * CYCLES_PER_POINT
        keys = writer.keys()
        found = {key: check.get(key) for key in keys}
        shard_of = {key: shard_for(b"default", key.encode(), SHARDS) for key in keys}
        assert prefix_violations(writer, found, shard_of) == []
    for point in POINTS:
        if point.startswith("snapshot."):  # snapshots work after all that, and clear what
            summary = client.save_snapshot(snapshots / f"{point}.kvs")  # killed writers left
            assert summary["rows"] >= len(writers) * len(writers[0].keys())
    assert sorted(path.name for path in snapshots.iterdir()) == ["snapshot.renamed.kvs", "snapshot.synced.kvs"]
