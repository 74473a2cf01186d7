"""Where the backends differ on purpose, a test per backend pins each documented
behaviour (README "Beyond one host: Redis Cluster"; docs/redis-cluster.md)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import (
    BatchMode,
    Cluster,
    ClusterUnavailable,
    InvalidRequest,
    NamespaceFull,
    Scope,
    StorageError,
    Timeout,
    ValueTooLarge,
)
from kvcluster.rediscluster import registry
from kvcluster.rediscluster.layout import counter_key, decode_record, encode_record, value_key
from kvcluster.rediscluster.slots import key_slot
from kvcluster.values import pack_value

AON = BatchMode.ALL_OR_NOTHING
SPREAD = {f"k{i}": i for i in range(20)}  # keys of many slots and of every shard


@pytest.fixture(scope="module")
def redis_kv(redis_cluster: str) -> Iterator[Any]:
    with kvcluster.connect(redis_cluster, timeout=10.0) as client:
        yield client


@pytest.fixture
def redis_ns(redis_kv: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    name = "d-" + request.node.name[:60].replace("[", "-").replace("]", "")
    namespace = redis_kv.create_namespace(name)
    yield namespace
    redis_kv.delete_namespace(name)


# -- atomic batches across slots --------------------------------------------------------
# All-or-nothing batches over several slots behave as on the local engine: the shared
# tests of test_batch_modes.py (LAYOUTS) pin it; tests/rediscluster/test_cross_slot_batches.py
# tests the commit protocol itself (crashes, pauses, concurrent batches). What stays
# Redis's own is the cost, and the one-script fast path that a hash tag opens:


def test_redis_a_hash_tag_puts_keys_in_one_slot(redis_ns: Any, raw_redis: Any) -> None:
    keys = ["cart:{42}:items", "cart:{42}:total", "{42}"]
    assert len({key_slot(value_key(redis_ns.name.encode(), key.encode())) for key in keys}) == 1
    txn_records = set(raw_redis.scan_iter(match="kv|{*}|txn|*"))
    result = redis_ns.set_many(dict.fromkeys(keys, 1), AON)
    assert len(set(result.data.values())) == 1
    assert set(raw_redis.scan_iter(match="kv|{*}|txn|*")) <= txn_records  # one script: no txn record needed


# -- operations of the local engine only ----------------------------------------------


def test_local_snapshots_and_journals(cluster: Cluster, tmp_path: Path) -> None:
    with cluster.connect() as client:
        client.rotate_journals()
        assert client.save_snapshot(tmp_path / "all.kvs")["rows"] >= 0


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda kv, path: kv.save_snapshot(path), "save_snapshot"),
        (lambda kv, path: kv.load_snapshot(path), "load_snapshot"),
        (lambda kv, path: kv.namespace("default").save_snapshot(path), "save_snapshot"),
        (lambda kv, path: kv.set_autosave(60, "a-{ts}.kvs"), "autosave"),
        (lambda kv, path: kv.autosave_tasks(), "autosave"),
        (lambda kv, path: kv.remove_autosave(), "autosave"),
        (lambda kv, path: kv.rotate_journals(), "rotate_journals"),
        (lambda kv, path: kv.resize(shards=8), "resize"),
        (lambda kv, path: kv.shutdown(), "shutdown"),
    ],
    ids=["snapshot", "load", "ns-snapshot", "autosave", "autosave-list", "autosave-remove", "rotate", "resize", "stop"],
)
def test_redis_refuses_what_has_no_meaning_there(redis_kv: Any, tmp_path: Path, call: Any, name: str) -> None:
    with pytest.raises(InvalidRequest, match=f"{name} has no meaning on a Redis Cluster"):
        call(redis_kv, tmp_path / "x.kvs")


# -- namespace changes seen by other clients ------------------------------------------


def test_local_other_clients_see_a_limit_change_at_once(cluster: Cluster) -> None:
    with cluster.connect() as admin, cluster.connect() as other_client:
        admin.create_namespace("d-local-limits")
        try:
            other = other_client.namespace("d-local-limits")
            admin.update_namespace("d-local-limits", max_value_bytes=8)
            with pytest.raises(ValueTooLarge):
                other.set("big", "x" * 20)
        finally:
            admin.delete_namespace("d-local-limits")


def test_redis_other_clients_see_a_limit_change_once_their_cache_expires(
    redis_cluster: str, redis_kv: Any, redis_ns: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "LIMITS_TTL", 3600.0)
    with kvcluster.connect(redis_cluster) as other_client:
        other = other_client.namespace(redis_ns.name)  # reads the entry: cached from now on
        redis_kv.update_namespace(redis_ns.name, max_value_bytes=8)
        other.set("big", "x" * 20)  # the cached limits still hold there
        with pytest.raises(ValueTooLarge):
            redis_ns.set("big", "x" * 20)  # the client that changed them sees them at once
        monkeypatch.setattr(registry, "LIMITS_TTL", 0.0)  # (1 s by default)
        with pytest.raises(ValueTooLarge):
            other.set("big", "x" * 20)


# -- status ------------------------------------------------------------------------------


def test_local_stats_describe_shards(cluster: Cluster) -> None:
    with cluster.connect() as client:
        stats = client.stats()
    assert len(stats["shards"]) == 3 and "data_dir" in stats and "default" in stats["namespaces"]


def test_redis_stats_describe_the_primaries(redis_kv: Any, redis_ns: Any) -> None:
    redis_ns.set_many(SPREAD, BatchMode.BEST_EFFORT)
    stats = redis_kv.stats()
    assert stats["backend"] == "redis-cluster" and stats["address"] == redis_kv.address and stats["ready"]
    assert len(stats["nodes"]) == 3
    slots = sorted(tuple(span) for node in stats["nodes"] for span in node["slots"])
    assert slots[0][0] == 0 and slots[-1][1] == 16383
    assert sum(last - first + 1 for first, last in slots) == 16384
    assert sum(node["keys"] for node in stats["nodes"]) >= len(SPREAD)
    assert all(node["redis_version"] and node["used_memory"] > 0 for node in stats["nodes"])
    assert stats["namespace_stats"][redis_ns.name]["keys"] == len(SPREAD)


# -- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["redis+cluster://h:0", "redis+cluster://u:p@h:7000", "redis+cluster://h:7000/0", "redis+cluster://a,,b"]
)
def test_redis_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidRequest, match=r"Redis Cluster address|port|empty node"):
        kvcluster.connect(address)


def test_redis_an_unreachable_cluster_is_unavailable() -> None:
    from kvtest.redis_cluster import free_cluster_ports

    (port,) = free_cluster_ports(1)
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable):
        kvcluster.connect(f"redis+cluster://127.0.0.1:{port}", timeout=1.0)
    assert time.monotonic() - started < 10


def test_redis_a_primary_that_stops_answering_is_a_timeout_and_nothing_is_resent(
    redis_cluster: str, redis_kv: Any, redis_ns: Any
) -> None:
    """redis-py would resend a timed-out command up to 10 times; the backend turns that
    off: a write is sent once, and its caller hears `Timeout` within the timeout."""
    slot = key_slot(value_key(redis_ns.name.encode(), b"k"))
    (pid,) = [node["pid"] for node in redis_kv.stats()["nodes"] if any(a <= slot <= b for a, b in node["slots"])]
    with kvcluster.connect(redis_cluster, timeout=0.5) as client:
        namespace = client.namespace(redis_ns.name)
        os.kill(pid, signal.SIGSTOP)  # a redis-server of the fixture's: it answers nothing now
        try:
            started = time.monotonic()
            with pytest.raises(Timeout):
                namespace.set("k", 1)
            assert time.monotonic() - started < 1.5
        finally:
            os.kill(pid, signal.SIGCONT)
    # The write reached the node's socket: it runs once the node wakes (the outcome of a
    # write that timed out is unknown, as locally).
    wait_until(lambda: redis_ns.get("k") == 1, "the write queued on the stopped node to run", timeout=10.0)


# -- what the Redis backend stores -----------------------------------------------------


def test_redis_records_are_the_documented_bytes(redis_ns: Any, raw_redis: Any) -> None:
    ts = redis_ns.set("u:1", {"name": "Alice"})
    redis_ns.set("tok", b"t", scope=Scope.EPHEMERAL)
    ns = redis_ns.name.encode()
    assert raw_redis.get(value_key(ns, b"u:1")) == encode_record(ts, Scope.PERMANENT, pack_value({"name": "Alice"}))
    assert decode_record(raw_redis.get(value_key(ns, b"tok"))).scope is Scope.EPHEMERAL


def test_redis_timestamps_grow_past_a_stored_future_one(redis_ns: Any, raw_redis: Any) -> None:
    future = time.time_ns() // 1000 + 60_000_000  # a node's clock a minute ahead, then set back
    raw_redis.set(value_key(redis_ns.name.encode(), b"k"), encode_record(future, Scope.PERMANENT, pack_value(1)))
    assert redis_ns.set("k", 2) == future + 1
    assert redis_ns.update("k", 3) == 2 and redis_ns.get_versioned("k") == (3, future + 2)


def test_redis_a_foreign_value_under_a_namespace_key_is_a_storage_error(redis_ns: Any, raw_redis: Any) -> None:
    raw_redis.set(value_key(redis_ns.name.encode(), b"foreign"), b"hi")
    with pytest.raises(StorageError, match="kvcluster record"):
        redis_ns.get("foreign")
    with pytest.raises(StorageError, match="kvcluster record"):
        redis_ns.set("foreign", 1)


def test_redis_scripts_come_back_after_a_script_flush(redis_ns: Any, raw_redis: Any) -> None:
    redis_ns.set("before", 1)
    raw_redis.execute_command("SCRIPT FLUSH", target_nodes=raw_redis.PRIMARIES)
    assert redis_ns.set("after", 2) > 0 and redis_ns.consume("before") == 1


def test_redis_a_key_counter_left_too_high_refuses_early(redis_kv: Any, redis_ns: Any, raw_redis: Any) -> None:
    """What a client crash between reserving room and writing can leave: a counter
    above the keys held. The namespace then refuses new keys early, never too late."""
    redis_kv.update_namespace(redis_ns.name, max_keys=2)
    redis_ns.set("a", 1)
    raw_redis.incrby(counter_key(redis_ns.name.encode()), 1)  # a reservation nobody took back
    with pytest.raises(NamespaceFull):
        redis_ns.set("b", 1)
    assert len(redis_ns) == 1
    redis_kv.update_namespace(redis_ns.name, max_keys=0)  # turning counting off and on counts again
    redis_kv.update_namespace(redis_ns.name, max_keys=2)
    redis_ns.set("b", 1)
