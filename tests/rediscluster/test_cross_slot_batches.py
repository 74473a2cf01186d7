"""All-or-nothing batches over several hash slots on a real Redis Cluster (txn.py):
crash safety with real processes killed at the protocol's failpoints, a client paused
past its deadline, concurrent batches on overlapping keys, and writers meeting locks.

The keys carry the hash tags {a}, {b} and {c}: slots 15495, 3300 and 7365, one on
each primary of the fixture's 3-node cluster (redis-cli splits the slots in thirds).
Children run with a TTL of 1 s (timeout 0.5 s, MIN_TTL lowered), so an abandoned
batch expires quickly; every wait polls with a deadline."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import BatchFailed, BatchMode, Timeout
from kvcluster.rediscluster import txn
from kvcluster.rediscluster.layout import (
    LOCKED,
    Lock,
    Record,
    TxnRecord,
    decode_stored,
    decode_txn,
    encode_lock,
    encode_record,
    record_tail,
    value_key,
)
from kvcluster.rediscluster.slots import SLOTS, key_slot
from kvcluster.scope import Scope
from kvcluster.values import pack_value

AON = BatchMode.ALL_OR_NOTHING
KEYS = [f"{{{tag}}}key{i}" for i, tag in enumerate("abcabc")]
CHILD_TIMEOUT = 0.5  # seconds; the child's batches get a TTL of 2 x 0.5 = 1 s

CHILD = """
import sys
import kvcluster
from kvcluster.rediscluster import txn

txn.MIN_TTL = 0.0
address, name, value = sys.argv[1], sys.argv[2], sys.argv[3]
client = kvcluster.connect(address, timeout=float(sys.argv[4]))
client.namespace(name).set_many({key: value for key in sys.argv[5:]})
print("the batch finished: the failpoint did not fire")
"""


def test_the_keys_span_every_primary() -> None:
    thirds = {key_slot(b"kv|ns|" + key.encode()) * 3 // SLOTS for key in KEYS}
    assert thirds == {0, 1, 2}


@pytest.fixture
def ns(redis_cluster: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    name = "x-" + "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:80]
    with kvcluster.connect(redis_cluster, timeout=5.0) as client:
        namespace = client.create_namespace(name)
        yield namespace
        client.delete_namespace(name)


def stored(ns: Any, key: str) -> bytes:
    return value_key(ns.name.encode(), key.encode())


def held(ns: Any, raw_redis: Any) -> dict[str, Record | Lock | None]:
    """What each of KEYS holds, as Redis has it."""
    return {key: None if (data := raw_redis.get(stored(ns, key))) is None else decode_stored(data) for key in KEYS}


def no_locks_left(ns: Any, raw_redis: Any) -> bool:
    """No value key of the namespace holds a lock (SCAN over every primary)."""
    pattern = f"kv|{ns.name}|*"
    return all(raw_redis.getrange(key, 8, 8) != bytes((LOCKED,)) for key in raw_redis.scan_iter(match=pattern))


def crash_in_child(redis_cluster: str, ns: Any, value: str, point: str) -> None:
    """A child process runs a cross-slot set_many of `value` to every key and is
    SIGKILLed at `point`."""
    env = {**os.environ, "KV_FAILPOINTS": f"{point}=kill"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, redis_cluster, ns.name, value, str(CHILD_TIMEOUT), *KEYS],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -9, child.stdout + child.stderr


def read_all(reader: str, redis_cluster: str, ns: Any) -> dict[str, tuple[Any, int]]:
    """Every key's (value, ts), read by `reader`: single gets, or an all-or-nothing
    get_many (sync or asyncio) and then versioned gets."""
    if reader == "get":
        versions = {key: ns.get_versioned(key) for key in KEYS}
        return {key: version for key, version in versions.items() if version is not None}
    if reader == "get_many":
        values = ns.get_many(KEYS, AON).data
    else:

        async def read() -> dict[str, Any]:
            async with await kvcluster.connect_async(redis_cluster, timeout=5.0) as client:
                namespace = await client.namespace(ns.name)
                return (await namespace.get_many(KEYS, AON)).data

        values = asyncio.run(read())
    versions = {key: ns.get_versioned(key) for key in KEYS}  # no lock is left: the same values
    assert {key: version[0] for key, version in versions.items()} == values
    return versions


# -- a client killed between the steps --------------------------------------------------


@pytest.mark.crash
@pytest.mark.parametrize("reader", ["get", "get_many", "async-get_many"])
def test_a_client_killed_after_prepare_leaves_every_old_value(
    redis_cluster: str, ns: Any, raw_redis: Any, reader: str
) -> None:
    old = ns.set_many(dict.fromkeys(KEYS, "old"), AON).data[KEYS[0]]
    crash_in_child(redis_cluster, ns, "new", "redis.txn.prepared")
    locks = held(ns, raw_redis)
    assert all(isinstance(lock, Lock) for lock in locks.values())  # it died holding every key
    lock = locks[KEYS[1]]
    assert isinstance(lock, Lock)
    assert raw_redis.get(stored(ns, KEYS[1])) == encode_lock(
        old,
        encode_record(old, Scope.PERMANENT, pack_value("old")),
        record_tail(Scope.PERMANENT, pack_value("new")),
        lock.txn_id,
        lock.txn_key,
    )
    assert decode_txn(raw_redis.get(lock.txn_key)).state == "pending"

    assert read_all(reader, redis_cluster, ns) == dict.fromkeys(KEYS, ("old", old))
    # Single reads take an undecided batch's old records and leave its locks; once its
    # time is up, the next read aborts it and rolls every key back.
    wait_until(
        lambda: (
            read_all(reader, redis_cluster, ns) == dict.fromkeys(KEYS, ("old", old)) and no_locks_left(ns, raw_redis)
        ),
        "a read to abort the dead client's batch",
        timeout=10.0,
    )
    record = raw_redis.get(lock.txn_key)
    assert record is None or decode_txn(record).state == "aborted"


@pytest.mark.crash
@pytest.mark.parametrize("reader", ["get", "get_many"])
def test_a_client_killed_after_commit_leaves_every_new_value(
    redis_cluster: str, ns: Any, raw_redis: Any, reader: str
) -> None:
    old = ns.set_many(dict.fromkeys(KEYS, "old"), AON).data[KEYS[0]]
    crash_in_child(redis_cluster, ns, "new", "redis.txn.committed")
    locks = [found for found in held(ns, raw_redis).values() if isinstance(found, Lock)]
    assert locks and len(locks) < len(KEYS)  # the primary group applied; the others still locked
    record = decode_txn(raw_redis.get(locks[0].txn_key))
    assert record.state == "committed" and record.ts > old

    assert read_all(reader, redis_cluster, ns) == dict.fromkeys(KEYS, ("new", record.ts))
    assert no_locks_left(ns, raw_redis)
    assert raw_redis.get(locks[0].txn_key) is None  # settled: its txn record is gone


@pytest.mark.crash
def test_a_single_set_on_a_dead_clients_expired_lock_resolves_it(redis_cluster: str, ns: Any, raw_redis: Any) -> None:
    ns.set_many(dict.fromkeys(KEYS, "old"), AON)
    crash_in_child(redis_cluster, ns, "new", "redis.txn.prepared")
    started = time.monotonic()
    ts = ns.set(KEYS[2], "mine")  # waits for the batch's 1 s, aborts it, rolls it back, writes
    assert time.monotonic() - started < 4.0
    assert ns.get_versioned(KEYS[2]) == ("mine", ts)
    assert no_locks_left(ns, raw_redis)  # the whole batch was rolled back, not only that key
    assert {key: ns.get(key) for key in KEYS} == {**dict.fromkeys(KEYS, "old"), KEYS[2]: "mine"}


# -- a client paused past its deadline -------------------------------------------------


def the_txn_record(ns: Any, raw_redis: Any) -> tuple[bytes, TxnRecord]:
    found = held(ns, raw_redis)[KEYS[0]]
    assert isinstance(found, Lock)
    return found.txn_key, decode_txn(raw_redis.get(found.txn_key))


def node_time_us(raw_redis: Any, key: bytes) -> int:
    seconds, micros = raw_redis.execute_command("TIME", target_nodes=raw_redis.get_node_from_key(key))
    return int(seconds) * 1_000_000 + int(micros)


@pytest.mark.parametrize("resolved", [False, True], ids=["expired", "aborted-by-a-reader"])
def test_a_client_paused_past_its_deadline_cannot_commit(
    redis_cluster: str, ns: Any, raw_redis: Any, monkeypatch: pytest.MonkeyPatch, resolved: bool
) -> None:
    old = ns.set_many(dict.fromkeys(KEYS, "old"), AON).data[KEYS[0]]

    def pause_past_the_deadline(point: str) -> None:
        if point != "redis.txn.prepared":
            return
        key, record = the_txn_record(ns, raw_redis)
        wait_until(lambda: node_time_us(raw_redis, key) >= record.expires, "the batch's time to be up", timeout=10.0)
        if resolved:  # another client meets a lock meanwhile and aborts the batch
            assert ns.get_many(KEYS, AON).data == dict.fromkeys(KEYS, "old")
            assert decode_txn(raw_redis.get(key)).state == "aborted"

    monkeypatch.setattr(txn, "MIN_TTL", 0.0)
    monkeypatch.setattr(txn, "failpoint", pause_past_the_deadline)
    with kvcluster.connect(redis_cluster, timeout=0.2) as client, pytest.raises(BatchFailed) as failed:
        client.namespace(ns.name).set_many(dict.fromkeys(KEYS, "late"), AON)
    assert set(failed.value.errors) == set(KEYS)
    assert all(isinstance(error, Timeout) for error in failed.value.errors.values())
    assert no_locks_left(ns, raw_redis)
    assert {key: ns.get_versioned(key) for key in KEYS} == dict.fromkeys(KEYS, ("old", old))


def test_a_commit_without_an_answer_never_leaves_a_batch_half_applied(
    redis_cluster: str, ns: Any, raw_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary node stops answering between the prepares and the commit: the commit
    and the abort that would learn its outcome both time out, and the client says the
    outcome is unknown (Timeout, not BatchFailed) without rolling anything back. Once
    the node answers again, the batch is whole one way or the other."""
    ns.set_many(dict.fromkeys(KEYS, "old"), AON)
    with kvcluster.connect(redis_cluster) as admin:
        pids = {node["id"]: node["pid"] for node in admin.stats()["nodes"]}
    stopped: list[int] = []
    others: list[str] = []  # the keys of the other nodes

    def stop_the_primary_node(point: str) -> None:
        if point == "redis.txn.prepared":
            key, _record = the_txn_record(ns, raw_redis)
            primary = raw_redis.get_node_from_key(key).name
            others.extend(k for k in KEYS if raw_redis.get_node_from_key(stored(ns, k)).name != primary)
            stopped.append(pids[primary])
            os.kill(stopped[0], signal.SIGSTOP)

    monkeypatch.setattr(txn, "failpoint", stop_the_primary_node)
    try:
        with kvcluster.connect(redis_cluster, timeout=0.3) as client, pytest.raises(Timeout) as unknown:
            client.namespace(ns.name).set_many(dict.fromkeys(KEYS, "new"), AON)
        assert not isinstance(unknown.value, BatchFailed)  # their locks stay: nothing was rolled back
        assert others and all(isinstance(decode_stored(raw_redis.get(stored(ns, key))), Lock) for key in others)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    values = ns.get_many(KEYS, AON).data  # resolves the batch, waiting for its decision if need be
    assert values in (dict.fromkeys(KEYS, "old"), dict.fromkeys(KEYS, "new"))
    wait_until(
        lambda: ns.get_many(KEYS, AON).data == values and no_locks_left(ns, raw_redis), "the batch settled", 10.0
    )


# -- writers meeting a lock --------------------------------------------------------------


def test_a_writer_waits_for_an_undecided_batch_then_writes(
    redis_cluster: str, ns: Any, raw_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns.set_many(dict.fromkeys(KEYS, "old"), AON)
    prepared, go = threading.Event(), threading.Event()

    def hold(point: str) -> None:
        if point == "redis.txn.prepared":
            prepared.set()
            assert go.wait(10.0)

    monkeypatch.setattr(txn, "failpoint", hold)
    batch: list[Any] = []
    batcher = threading.Thread(target=lambda: batch.append(ns.set_many(dict.fromkeys(KEYS, "batch"), AON)))
    batcher.start()
    try:
        assert prepared.wait(10.0)
        with kvcluster.connect(redis_cluster, timeout=5.0) as other_client:
            other = other_client.namespace(ns.name)
            assert other.get(KEYS[4]) == "old"  # a reader does not wait: the batch is undecided
            wrote: list[int] = []

            def write() -> None:
                wrote.append(other.set(KEYS[4], "writer"))
                other.set_many({KEYS[5]: "writer", "{a}free": "writer"}, BatchMode.BEST_EFFORT)

            writer = threading.Thread(target=write)
            writer.start()
            writer.join(0.3)
            assert writer.is_alive() and isinstance(held(ns, raw_redis)[KEYS[4]], Lock)  # it waits
            go.set()
            writer.join(10.0)
            batcher.join(10.0)
    finally:
        go.set()
        batcher.join(10.0)
    (result,) = batch
    assert wrote and wrote[0] > result.data[KEYS[4]]
    expected = {**dict.fromkeys(KEYS, "batch"), KEYS[4]: "writer", KEYS[5]: "writer"}
    assert {key: ns.get(key) for key in KEYS} == expected and ns.get("{a}free") == "writer"
    assert no_locks_left(ns, raw_redis)


def test_batches_and_scans_see_undecided_batches_as_not_yet_applied(
    ns: Any, raw_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns.set_many({KEYS[0]: "old"}, AON)
    prepared, go = threading.Event(), threading.Event()

    def hold(point: str) -> None:
        if point == "redis.txn.prepared":
            prepared.set()
            assert go.wait(10.0)

    monkeypatch.setattr(txn, "failpoint", hold)
    batcher = threading.Thread(target=lambda: ns.set_many(dict.fromkeys(KEYS, "batch"), AON))
    batcher.start()
    try:
        assert prepared.wait(10.0)
        assert ns.get_all() == {KEYS[0]: ("old", ns.get_versioned(KEYS[0])[1])}
        assert len(ns) == 1 and ns.exists(KEYS[0]) and not ns.exists(KEYS[1])
        assert ns.get_many(KEYS, BatchMode.BEST_EFFORT).data == {KEYS[0]: "old"}
        tagged = [key for key in KEYS if key.startswith("{b}")]
        with pytest.raises(BatchFailed):  # one slot: one MGET, old records
            ns.get_many(tagged, AON)
    finally:
        go.set()
        batcher.join(10.0)
    assert len(ns) == len(KEYS) and ns.get_many(KEYS, AON).data == dict.fromkeys(KEYS, "batch")


# -- concurrent batches ----------------------------------------------------------------

GROUPS = {"all": KEYS, "left": KEYS[:4], "right": KEYS[2:]}  # left and right share KEYS[2:4]


def consistent(values: dict[str, Any]) -> bool:
    """The values some order of whole batches leaves: each pair written together by
    every batch holds one batch's value, and the middle pair's last writer is also the
    last writer of the side it belongs to."""
    pairs = [values[KEYS[0]], values[KEYS[2]], values[KEYS[4]]]
    if [values[KEYS[1]], values[KEYS[3]], values[KEYS[5]]] != pairs:
        return False
    middle = pairs[1]
    if middle[0] == "all":
        return bool(pairs[0] == middle == pairs[2])
    return bool(pairs[0 if middle[0] == "left" else 2] == middle)


@pytest.mark.slow
def test_concurrent_cross_slot_batches_apply_whole_or_not_at_all(redis_cluster: str, ns: Any, raw_redis: Any) -> None:
    ns.set_many(dict.fromkeys(KEYS, ("all", -1, 0)), AON)
    applied: set[tuple[str, int, int]] = {("all", -1, 0)}
    failed: list[BatchFailed] = []
    views: list[dict[str, Any]] = []
    lock = threading.Lock()

    def writer(number: int) -> None:
        rng = random.Random(number)
        with kvcluster.connect(redis_cluster, timeout=5.0) as client:
            namespace = client.namespace(ns.name)
            for seq in range(12):
                group = rng.choice(list(GROUPS))
                value = (group, number, seq)
                try:
                    namespace.set_many(dict.fromkeys(GROUPS[group], value), AON)
                except BatchFailed as exc:
                    with lock:
                        failed.append(exc)
                else:
                    with lock:
                        applied.add(value)

    def reader() -> None:
        with kvcluster.connect(redis_cluster, timeout=5.0) as client:
            namespace = client.namespace(ns.name)
            for _ in range(15):
                views.append({key: tuple(value) for key, value in namespace.get_many(KEYS, AON).data.items()})

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(4)]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60.0)
    assert not any(thread.is_alive() for thread in threads)
    final = {key: tuple(value) for key, value in ns.get_many(KEYS, AON).data.items()}
    for view in [*views, final]:
        assert consistent(view), view
        assert set(view.values()) <= applied  # a batch that failed never shows
    reasons = {str(error) for exc in failed for error in exc.errors.values()}
    assert all("conflict" in reason for reason in reasons), reasons
    assert len(applied) > 1 + len(failed) // 2  # most batches got through
    assert no_locks_left(ns, raw_redis)
    versions = [ns.get_versioned(key) for key in KEYS]
    assert versions[0][1] == versions[1][1] and versions[4][1] == versions[5][1]


# -- the protocol's smaller parts ----------------------------------------------------------


def test_a_txn_record_lies_in_the_slot_of_the_batchs_first_key(
    ns: Any, raw_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bytes, TxnRecord]] = []

    def look(point: str) -> None:
        if point == "redis.txn.prepared":
            seen.append(the_txn_record(ns, raw_redis))

    monkeypatch.setattr(txn, "failpoint", look)
    ns.set_many(dict.fromkeys(KEYS[1:] + KEYS[:1], 1), AON)
    ((key, record),) = seen
    assert key_slot(key) == key_slot(stored(ns, KEYS[1]))
    assert record.state == "pending" and record.primary == [stored(ns, KEYS[1]), stored(ns, KEYS[4])]
    assert sorted(record.keys) == sorted(stored(ns, key) for key in KEYS if not key.startswith("{b}"))
    assert raw_redis.get(key) is None  # deleted once the batch rolled forward


def test_max_keys_counts_cross_slot_batches(redis_cluster: str, ns: Any) -> None:
    with kvcluster.connect(redis_cluster) as client:
        client.update_namespace(ns.name, max_keys=8)
        limited = client.namespace(ns.name)
        limited.set_many(dict.fromkeys(KEYS, 1), AON)
        with pytest.raises(BatchFailed) as full:
            limited.set_many(dict.fromkeys([*KEYS[:2], "{a}n1", "{b}n2", "{c}n3"], 2), AON)
        assert set(full.value.errors) <= {"{a}n1", "{b}n2", "{c}n3"} and full.value.errors
        assert limited.get_many(KEYS, AON).data == dict.fromkeys(KEYS, 1)
        limited.set_many(dict.fromkeys([*KEYS[:2], "{a}n1", "{c}n3"], 2), AON)  # 8: room enough
        limited.delete_many(["{a}n1", "{c}n3", KEYS[1]], AON)
        limited.set_many(dict.fromkeys(["{b}n2", "{c}n4", "{a}n5"], 3), AON)  # 5 + 3
        assert len(limited) == 8


def test_a_batch_has_twice_its_clients_timeout_and_at_least_min_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(txn, "MIN_TTL", 0.0)
    assert txn.ttl(0.25) == 0.5
    monkeypatch.setattr(txn, "MIN_TTL", 5.0)
    assert txn.ttl(0.25) == 5.0 and txn.ttl(10.0) == 20.0
