"""Point-in-time recovery of transactions a shard holds prepared, with no outcome on record:
the coordinator's decision log settles them. Built at the store level, without processes:
a data directory of two shard stores, a decision log and a manifest."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kvcluster import InvalidRequest, Retention, Scope, StorageError
from kvcluster.actors.decisions import ABORT, COMMIT, Decision
from kvcluster.datadir import DataDir
from kvcluster.journal import VersionedStore, earliest_recoverable, recover_at
from kvcluster.pitr import iso_time, recover, recover_state, to_timestamp
from kvcluster.values import pack_value

P = Scope.PERMANENT
NS = b"default"


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Fixture:
    data: DataDir
    shards: list[VersionedStore]
    decisions: VersionedStore

    def close(self) -> None:
        for store in [*self.shards, self.decisions]:
            store.close()

    def decide(self, txn: bytes, outcome: str, ts: int, deadline: int) -> None:
        decision = Decision(outcome, ts, deadline, {0, 1} if outcome == COMMIT else set())
        self.decisions.set_raw(b"txn", txn.hex().encode(), decision.pack())


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Fixture:
    data = DataDir.at(tmp_path / "data")
    os.makedirs(data.root)
    data.write_manifest(
        {
            "shards": 2,
            "epoch": 1,
            "durability": "none",
            "endpoints": [data.endpoint(data.shard_name(i)) for i in range(2)],
            "streams": [data.stream(data.shard_name(i)) for i in range(2)],
            "namespaces": {"default": {"max_keys": 0, "max_value_bytes": 0, "created": 1}},
            "retention": Retention(max_archives=3).to_dict(),
        }
    )
    shards = [VersionedStore.open(data.shard_dir(i), retention=Retention.keep_all()) for i in range(2)]
    decisions = VersionedStore.open(os.path.join(data.coordinator_dir, "decisions"))
    return Fixture(data, shards, decisions)


def prepare(store: VersionedStore, txn: bytes, deadline: int, **values: int | None) -> int:
    changes = [(k.encode(), None if v is None else pack_value(v), P) for k, v in values.items()]
    return store.prepare_raw(NS, txn, deadline, changes)


def test_a_commit_on_one_shard_only_is_completed_from_the_decision_log(cluster_dir: Fixture) -> None:
    a, b = cluster_dir.shards
    x0 = a.set("default", "x", 0)
    y0 = b.set("default", "y", 0)
    deadline = now_us() + 60_000_000
    ts = max(prepare(a, b"t1", deadline, x=1), prepare(b, b"t1", deadline, y=1))
    cluster_dir.decide(b"t1", COMMIT, ts, deadline)
    b.commit_raw(b"t1", ts)  # shard 0 crashed before its COMMIT: only the log knows
    later = a.set("default", "z", 2)
    cluster_dir.close()
    root = cluster_dir.data.root
    assert recover_state(root, ts) == {("default", "x"): (1, ts), ("default", "y"): (1, ts)}
    assert recover_state(root, ts - 1) == {("default", "x"): (0, x0), ("default", "y"): (0, y0)}
    assert recover_state(root, later)[("default", "z")] == (2, later)


def test_aborted_and_undecided_transactions_are_not_applied(cluster_dir: Fixture) -> None:
    a, b = cluster_dir.shards
    a.set("default", "x", 0)
    past = now_us() - 1
    prepare(a, b"aborted", now_us() + 60_000_000, x=1)
    cluster_dir.decide(b"aborted", ABORT, 0, now_us() + 60_000_000)
    prepare(b, b"lost", past, y=1)  # its deadline passed with no decision: presumed abort
    soon = now_us() + 300_000
    prepare(a, b"young", soon, w=1)  # undecided yet: recovery waits for its deadline
    aborted_later = prepare(b, b"late", now_us() + 60_000_000, v=1)
    b.abort_raw(b"late")
    cluster_dir.close()
    state = recover_state(cluster_dir.data.root, aborted_later)
    assert now_us() >= soon
    assert state == {("default", "x"): (0, state["default", "x"][1])}


def test_recover_refuses_a_taken_target_and_writes_a_fresh_data_dir(cluster_dir: Fixture, tmp_path: Path) -> None:
    a, b = cluster_dir.shards
    ts = a.set("default", "x", {"v": 1})
    deadline = now_us() + 60_000_000
    txn_ts = max(prepare(a, b"t", deadline, x=None), prepare(b, b"t", deadline, y=2))
    cluster_dir.decide(b"t", COMMIT, txn_ts, deadline)
    cluster_dir.close()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    with pytest.raises(InvalidRequest, match="not empty"):
        recover(cluster_dir.data.root, txn_ts, taken)
    with pytest.raises(InvalidRequest, match="inside"):
        recover(cluster_dir.data.root, txn_ts, os.path.join(cluster_dir.data.root, "sub"))
    empty = tmp_path / "empty"
    empty.mkdir()
    report = recover(cluster_dir.data.root, ts, empty)
    assert report.keys == [1, 0]
    assert recover_at(empty / "shard-000", 2**62) == {("default", "x"): ({"v": 1}, ts)}
    assert earliest_recoverable(str(empty / "shard-000")) == ts  # the cut: nothing older to replay
    report = recover(cluster_dir.data.root, txn_ts, tmp_path / "new")
    assert report.keys == [0, 1] and report.transactions == 1
    manifest = DataDir.at(tmp_path / "new").read_manifest()
    assert manifest["endpoints"][0].startswith(f"ipc://{tmp_path / 'new'}/")
    assert manifest["retention"] == Retention(max_archives=3).to_dict()
    assert manifest["recovered"]["at"] == txn_ts
    assert not os.path.exists(tmp_path / "new" / "coordinator" / "decisions")
    assert [p for p in os.listdir(tmp_path) if "recovering" in p] == []
    with VersionedStore.open(tmp_path / "new" / "shard-001") as store:
        assert store.get("default", "y") == (2, txn_ts)
        assert store.set("default", "y", 3) > txn_ts


def test_moments_parse_as_utc() -> None:
    assert to_timestamp(5) == 5
    assert to_timestamp("1700000000000001") == 1_700_000_000_000_001
    assert to_timestamp("1970-01-01T00:00:01") == 1_000_000
    assert to_timestamp("1970-01-01T00:00:01Z") == 1_000_000
    assert to_timestamp("1970-01-01T01:00:01.000002+01:00") == 1_000_002
    assert to_timestamp(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=7)) == 7
    assert iso_time(1_000_002) == "1970-01-01T00:00:01.000002+00:00"
    for bad in ("yesterday", -1, True, 1.5):
        with pytest.raises(InvalidRequest):
            to_timestamp(bad)  # type: ignore[arg-type]


def test_a_moment_before_retention_is_refused_with_how_far_back(cluster_dir: Fixture) -> None:
    a, b = cluster_dir.shards
    first = a.set("default", "x", 1)
    b.set("default", "y", 1)
    b.rotate()
    b.close()
    reopened = VersionedStore.open(cluster_dir.data.shard_dir(1), retention=Retention(max_archives=0))
    reopened.rotate()
    reach = earliest_recoverable(cluster_dir.data.shard_dir(1))
    cluster_dir.shards[1] = reopened
    cluster_dir.close()
    with pytest.raises(StorageError) as refused:
        recover_state(cluster_dir.data.root, first)
    assert refused.value.timestamp == reach
    assert str(reach) in str(refused.value) and iso_time(reach) in str(refused.value)
    assert recover_state(cluster_dir.data.root, reach)[("default", "x")] == (1, first)
