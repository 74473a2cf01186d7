"""VersionedStore's API: values, timestamps, scopes, durability modes, bad input, locking."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from kvtest.faults import CountingFS, FaultyFS

from kvcluster import InvalidRequest, Scope, StorageError
from kvcluster.journal import VersionedStore

OpenStore = Callable[..., VersionedStore]

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    3.25,
    "",
    "héllo ✓",
    b"",
    b"\x00\xff" * 100,
    [],
    [1, "two", [3.0]],
    {},
    {"name": "Alice", "tags": ["a", "b"], "nested": {"x": None}},
    {1: "int key", "s": b"bytes"},
    {(1, ("a", 2)): "tuple key", "t": [{(3,): None}]},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_round_trip_through_reopen(open_store: OpenStore, store_dir: str, value: Any) -> None:
    store = open_store()
    ts = store.set("ns", "k", value)
    assert store.get("ns", "k") == (value, ts)
    store.close()
    assert open_store().get("ns", "k") == (value, ts)


def test_tuples_come_back_as_lists(open_store: OpenStore) -> None:
    store = open_store()
    store.set("ns", "k", (1, (2, 3)))
    assert store.get("ns", "k") == ([1, [2, 3]], store.get("ns", "k")[1])  # type: ignore[index]


@pytest.mark.parametrize("value", [object(), {1, 2}, 2**64, complex(1, 2), {"k": object()}], ids=repr)
def test_unstorable_values_are_refused_before_anything_is_written(open_store: OpenStore, value: Any) -> None:
    store = open_store()
    before = store.stats()["journal_bytes"]
    with pytest.raises(InvalidRequest, match="cannot be stored"):
        store.set("ns", "k", value)
    assert store.stats()["journal_bytes"] == before
    assert store.get("ns", "k") is None


@pytest.mark.parametrize(
    ("ns", "key"),
    [("ns", ""), ("ns", 1), ("ns", b"bytes"), ("ns", "x" * 1025), ("ns", "é" * 513), ("", "k"), ("../up", "k"),
     ("a b", "k"), ("n" * 129, "k"), (None, "k"), ("ns", "\ud800")],
)  # fmt: skip
def test_bad_keys_and_namespaces_are_invalid_requests(open_store: OpenStore, ns: Any, key: Any) -> None:
    store = open_store()
    with pytest.raises(InvalidRequest):
        store.set(ns, key, 1)
    with pytest.raises(InvalidRequest):
        store.get(ns, key)


def test_longest_key_is_accepted(open_store: OpenStore) -> None:
    store = open_store()
    key = "é" * 512  # 1024 UTF-8 bytes
    store.set("ns", key, 1)
    assert store.get("ns", key) is not None


def test_timestamps_strictly_increase_and_delete_reports_its_own(open_store: OpenStore) -> None:
    store = open_store()
    stamps = [store.set("ns", f"k{i % 3}", i) for i in range(1000)]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    removed = store.delete("ns", "k0")
    assert removed is not None and removed > stamps[-1]
    assert store.delete("ns", "k0") is None
    assert store.get("ns", "k0") is None


def test_timestamps_keep_increasing_after_the_clock_steps_back(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store()
    last = store.set("ns", "a", 1)
    store.rotate()
    store.set("ns", "b", 2)
    last = max(last, store.stats()["last_ts"])
    store.close()
    monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000)  # 1970
    reopened = open_store()
    later = reopened.set("ns", "c", 3)
    assert later > last
    assert reopened.set("ns", "d", 4) == later + 1


def test_clock_is_seeded_from_the_largest_timestamp_not_the_last_record(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store()
    store.set("ns", "a", 1)
    newest = store.set("ns", "b", 2)
    store.close()
    # A record written later but with an older timestamp: the clock must not seed from it.
    monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000)
    store = open_store()
    assert store.set("ns", "c", 3) == newest + 1


def test_delete_survives_reopen(open_store: OpenStore) -> None:
    store = open_store()
    store.set("ns", "gone", 1)
    store.set("ns", "kept", 2)
    store.delete("ns", "gone")
    store.close()
    reopened = open_store()
    assert reopened.get("ns", "gone") is None
    assert reopened.get("ns", "kept") is not None
    assert reopened.count() == 1


def test_items_namespaces_and_counts(open_store: OpenStore) -> None:
    store = open_store()
    stamps = {f"k{i}": store.set("a", f"k{i}", i) for i in range(10)}
    store.set("b", "x", "y", scope=Scope.EPHEMERAL)
    assert dict(store.items("a")) == {k: (int(k[1:]), ts) for k, ts in stamps.items()}
    assert store.namespaces() == ["a", "b"]
    assert store.count("a") == 10 and store.count("b") == 1 and store.count() == 11
    assert list(store.items("b", scope=Scope.PERMANENT)) == []
    assert [k for k, _ in store.items("b", scope=Scope.EPHEMERAL)] == ["x"]
    assert list(store.items("empty")) == []


def test_items_is_a_snapshot_safe_against_writes_during_iteration(open_store: OpenStore) -> None:
    store = open_store()
    for i in range(100):
        store.set("ns", f"k{i}", i)
    seen = []
    for key, _ in store.items("ns"):
        seen.append(key)
        store.set("ns", key + "-new", 0)
        store.delete("ns", key)
    assert len(seen) == 100


def test_ephemeral_values_are_gone_after_reopen(open_store: OpenStore) -> None:
    store = open_store()
    store.set("ns", "session", b"token", scope=Scope.EPHEMERAL)
    store.set("ns", "user", "alice")
    assert store.scope_of("ns", "session") is Scope.EPHEMERAL
    assert store.get("ns", "session") is not None
    store.close()
    reopened = open_store()
    assert reopened.get("ns", "session") is None
    assert reopened.get("ns", "user") is not None


def test_ephemeral_over_permanent_does_not_resurrect_the_old_value(open_store: OpenStore) -> None:
    store = open_store()
    store.set("ns", "k", "durable")
    store.set("ns", "k", "in memory", scope=Scope.EPHEMERAL)
    assert store.get("ns", "k")[0] == "in memory"  # type: ignore[index]
    assert store.scope_of("ns", "k") is Scope.EPHEMERAL
    store.close()
    assert open_store().get("ns", "k") is None


def test_permanent_over_ephemeral_and_deleting_ephemeral(open_store: OpenStore) -> None:
    store = open_store()
    store.set("ns", "k", 1, scope=Scope.EPHEMERAL)
    ts = store.set("ns", "k", 2)
    assert store.scope_of("ns", "k") is Scope.PERMANENT
    assert store.count("ns") == 1
    store.set("ns", "e", 1, scope=Scope.EPHEMERAL)
    removed = store.delete("ns", "e")
    assert removed is not None and removed > ts
    store.close()
    assert open_store().get("ns", "k") == (2, ts)


def test_ephemeral_writes_never_touch_the_journal(open_store: OpenStore) -> None:
    store = open_store()
    before = store.stats()["journal_bytes"]
    for i in range(100):
        store.set("ns", f"e{i}", i, scope=Scope.EPHEMERAL)
    store.delete("ns", "e0")
    assert store.stats()["journal_bytes"] == before


def test_always_flushes_every_write_and_a_group_flushes_once(open_store: OpenStore) -> None:
    fs = CountingFS()
    store = open_store(durability="always", fs=fs)
    start = fs.calls["flush"]
    for i in range(10):
        store.set("ns", f"k{i}", i)
    assert fs.calls["flush"] - start == 10
    start = fs.calls["flush"]
    with store.group():
        for i in range(100):
            store.set("ns", f"g{i}", i)
        with store.group():  # nested groups share the outer flush
            store.delete("ns", "g0")
        assert fs.calls["flush"] == start
    assert fs.calls["flush"] - start == 1


def test_none_never_flushes_until_close(open_store: OpenStore) -> None:
    fs = CountingFS()
    store = open_store(durability="none", fs=fs)
    start = fs.calls["flush"]
    for i in range(100):
        store.set("ns", f"k{i}", i)
    store.tick()
    assert fs.calls["flush"] == start
    assert store.flush_due_in() is None
    store.close()
    assert fs.calls["flush"] == start + 1


def test_interval_flush_is_driven_by_tick(open_store: OpenStore) -> None:
    fs = CountingFS()
    store = open_store(durability="interval", flush_interval=0.1, fs=fs)
    start = fs.calls["flush"]
    assert store.flush_due_in() is None  # nothing written, nothing due
    store.set("ns", "k", 1)
    due = store.flush_due_in()
    assert due is not None and 0 < due <= 0.1
    now = time.monotonic()
    store.tick(now)  # not yet due
    assert fs.calls["flush"] == start
    store.tick(now + 0.2)
    assert fs.calls["flush"] == start + 1
    assert store.flush_due_in() is None


def test_interval_flushes_from_the_write_path_under_continuous_writes(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = CountingFS()
    store = open_store(durability="interval", flush_interval=0.1, fs=fs)
    start = fs.calls["flush"]
    now = [1000.0]
    monkeypatch.setattr("kvcluster.journal.store.time.monotonic", lambda: now[0])
    for i in range(50):  # 50 writes over 0.49 s of (fake) time: flushed about every 0.1 s
        store.set("ns", f"k{i}", i)
        now[0] += 0.01
    assert 4 <= fs.calls["flush"] - start <= 5


def test_failed_flush_is_not_acknowledged_and_makes_the_store_read_only(store_dir: str) -> None:
    good = VersionedStore.open(store_dir, durability="always")
    acked = {f"k{i}": good.set("ns", f"k{i}", i) for i in range(5)}
    good.close()

    store = VersionedStore.open(store_dir, durability="always", fs=FaultyFS({"flush": 2}))
    acked["a"] = store.set("ns", "a", 1)
    with pytest.raises(StorageError, match="injected flush failure"):
        store.set("ns", "b", 2)
    with pytest.raises(StorageError, match="read-only"):
        store.set("ns", "c", 3)
    with pytest.raises(StorageError, match="read-only"):
        store.delete("ns", "a")
    assert store.stats()["read_only"] is True
    assert store.get("ns", "k1") == (1, acked["k1"])  # reads keep working
    store.close()

    reopened = VersionedStore.open(store_dir)
    for key, ts in acked.items():
        assert reopened.get("ns", key) is not None and reopened.get("ns", key)[1] == ts  # type: ignore[index]
    assert reopened.get("ns", "c") is None
    reopened.close()


def test_failed_group_flush_raises_at_group_exit(open_store: OpenStore) -> None:
    store = open_store(durability="always", fs=FaultyFS({"flush": 2}))  # 1: creating the journal
    with pytest.raises(StorageError), store.group():
        store.set("ns", "a", 1)
        store.set("ns", "b", 2)
    with pytest.raises(StorageError, match="read-only"):
        store.set("ns", "c", 3)


def test_a_second_open_of_the_same_directory_is_refused(open_store: OpenStore, store_dir: str) -> None:
    open_store()
    with pytest.raises(StorageError, match="open in another process"):
        VersionedStore.open(store_dir)


@pytest.mark.parametrize(
    "options",
    [{"buffer_size": 100}, {"buffer_size": 2.5}, {"high_water_mark": 0.0}, {"high_water_mark": 1.5},
     {"durability": "sometimes"}, {"flush_interval": 0}],
)  # fmt: skip
def test_bad_options_are_invalid_requests(store_dir: str, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        VersionedStore.open(store_dir, **options)
    assert not os.path.exists(os.path.join(store_dir, "journal"))


def test_a_foreign_file_named_journal_is_refused_and_left_alone(store_dir: str) -> None:
    os.makedirs(store_dir)
    path = os.path.join(store_dir, "journal")
    content = b"not a journal at all, just some text that happens to be here" * 10
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(StorageError, match="not a kvcluster journal"):
        VersionedStore.open(store_dir)
    with open(path, "rb") as f:
        assert f.read() == content


def test_missing_journal_beside_archives_is_refused(open_store: OpenStore, store_dir: str) -> None:
    store = open_store()
    store.set("ns", "k", 1)
    store.rotate()
    store.close()
    os.unlink(os.path.join(store_dir, "journal"))
    with pytest.raises(StorageError, match="archives are present"):
        VersionedStore.open(store_dir)


def test_context_manager_closes_and_releases_the_lock(store_dir: str) -> None:
    with VersionedStore.open(store_dir) as store:
        store.set("ns", "k", 1)
    with VersionedStore.open(store_dir) as again:
        assert again.get("ns", "k") is not None
