"""Rotation, archives, growth and retention — and what a failed step leaves behind."""

from __future__ import annotations

import errno
import os
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from kvtest.faults import FaultyFS

from kvcluster import Retention, StorageError
from kvcluster.journal import VersionedStore, earliest_recoverable, recover_at
from kvcluster.journal.archive import list_archives, list_raw_archives

OpenStore = Callable[..., VersionedStore]


def permanent_state(store: VersionedStore) -> dict[tuple[str, str], tuple[Any, int]]:
    from kvcluster import Scope

    return {(ns, key): entry for ns in store.namespaces() for key, entry in store.items(ns, scope=Scope.PERMANENT)}


def files(directory: str) -> list[str]:
    return sorted(os.listdir(directory))


def test_rotation_at_a_tiny_buffer_keeps_values_and_timestamps(open_store: OpenStore) -> None:
    store = open_store(buffer_size=4096)
    latest = {}
    for i in range(3000):
        key = f"k{i % 40}"
        latest[key] = (i, store.set("ns", key, i))
    assert store.rotations > 10
    assert dict(store.items("ns")) == latest
    store.close()
    assert dict(open_store(buffer_size=4096).items("ns")) == latest


def test_an_archive_inflates_to_a_journal_holding_the_pre_rotation_state(
    open_store: OpenStore, store_dir: str, tmp_path: Any
) -> None:
    store = open_store(buffer_size=1 << 16)
    for i in range(500):
        store.set("ns", f"k{i % 70}", {"i": i})
        if i % 7 == 0:
            store.delete("ns", f"k{(i * 3) % 70}")
    before = permanent_state(store)
    store.rotate()
    (archive,) = list_archives(store_dir)
    copy = tmp_path / "inflated"
    copy.mkdir()
    with open(archive.path, "rb") as f:
        (copy / "journal").write_bytes(zlib.decompress(f.read()))
    inflated = open_store(str(copy))
    assert permanent_state(inflated) == before
    assert inflated.damage == ()


def test_the_journal_grows_in_powers_of_two_and_shrinks_back(open_store: OpenStore) -> None:
    store = open_store(buffer_size=4096)
    for i in range(2000):
        store.set("ns", f"key-{i:05d}", "x" * 20)
    grown = store.stats()["journal_size"]
    assert grown > 4096
    assert grown & (grown - 1) == 0  # 4096 * 2**k
    live = store.stats()["journal_bytes"]
    assert live <= grown * 0.8
    for i in range(2000):
        store.delete("ns", f"key-{i:05d}")
    store.rotate()
    assert store.stats()["journal_size"] == 4096
    assert store.count() == 0


def test_a_value_larger_than_the_buffer_grows_the_journal(open_store: OpenStore) -> None:
    store = open_store(buffer_size=4096)
    ts = store.set("ns", "big", b"x" * 100_000)
    assert store.stats()["journal_size"] * 0.8 / 2 >= 100_000  # room for the state and as much again
    store.close()
    assert open_store(buffer_size=4096).get("ns", "big") == (b"x" * 100_000, ts)


def test_failed_allocation_of_the_next_journal_changes_nothing(store_dir: str) -> None:
    fs = FaultyFS({"allocate": 2}, error=errno.ENOSPC)  # 1: the first journal
    store = VersionedStore.open(store_dir, buffer_size=4096, fs=fs)
    acked = {}
    with pytest.raises(StorageError, match="injected allocate failure") as raised:
        for i in range(10_000):
            acked[f"k{i}"] = store.set("ns", f"k{i}", i)
    assert isinstance(raised.value.__cause__, OSError)
    assert raised.value.__cause__.errno == errno.ENOSPC
    failed_at = len(acked)
    assert store.get("ns", f"k{failed_at}") is None  # the write that needed rotation was not applied
    assert store.rotations == 0
    assert "journal.next" not in files(store_dir)
    # the fault was a one-off: the next write rotates and succeeds
    acked["after"] = store.set("ns", "after", 1)
    assert store.rotations == 1
    store.close()
    with VersionedStore.open(store_dir, buffer_size=4096) as reopened:
        for key, ts in acked.items():
            assert reopened.get("ns", key)[1] == ts  # type: ignore[index]


def test_failed_rename_removes_the_link_and_the_next_journal(store_dir: str) -> None:
    store = VersionedStore.open(store_dir, buffer_size=4096, fs=FaultyFS({"rename": 2}))  # 1: first journal
    store.set("ns", "k", 1)
    with pytest.raises(StorageError, match="injected rename failure"):
        store.rotate()
    assert files(store_dir) == ["LOCK", "journal"]
    store.set("ns", "k2", 2)  # still writing to the same journal
    store.rotate()
    store.close()
    assert len(list_archives(store_dir)) == 1


def test_failed_directory_sync_after_the_switch_makes_the_store_read_only(store_dir: str) -> None:
    # fsync_dir calls: 1 first journal, 2 after the link, 3 after the rename
    store = VersionedStore.open(store_dir, buffer_size=4096, fs=FaultyFS({"fsync_dir": 3}))
    ts = store.set("ns", "k", 1)
    with pytest.raises(StorageError, match="syncing the directory"):
        store.rotate()
    with pytest.raises(StorageError, match="read-only"):
        store.set("ns", "k2", 2)
    store.close()
    with VersionedStore.open(store_dir, buffer_size=4096) as reopened:
        assert reopened.get("ns", "k") == (1, ts)


def test_the_retired_journal_stays_until_its_archive_is_durable(store_dir: str) -> None:
    # fsync calls: 1 first journal, 2 next journal, 3 the archive (fails)
    store = VersionedStore.open(store_dir, buffer_size=4096, fs=FaultyFS({"fsync": 3}))
    ts = store.set("ns", "k", 1)
    store.rotate()
    assert store.archive_error is not None
    assert list_archives(store_dir) == []
    (raw,) = list_raw_archives(store_dir)
    assert not [n for n in files(store_dir) if n.endswith(".tmp")]
    assert recover_at(store_dir, ts) == {("ns", "k"): (1, ts)}  # history readable from the raw file
    store.close()
    with VersionedStore.open(store_dir, buffer_size=4096) as reopened:  # archiving resumes
        assert reopened.archive_error is None
    assert list_raw_archives(store_dir) == []
    assert [a.cut for a in list_archives(store_dir)] == [raw.cut]
    assert recover_at(store_dir, ts) == {("ns", "k"): (1, ts)}


def test_retention_by_count_keeps_the_newest_and_moves_the_earliest(open_store: OpenStore, store_dir: str) -> None:
    store = open_store(retention=Retention(max_archives=3, max_age=None, max_bytes=None))
    stamps = []
    for i in range(6):
        stamps.append(store.set("ns", "k", i))
        store.rotate()
    archives = list_archives(store_dir)
    assert len(archives) == 3
    earliest = earliest_recoverable(store_dir)
    assert earliest > stamps[2]
    with pytest.raises(StorageError, match=f"back to {earliest}"):
        recover_at(store_dir, stamps[2])
    assert recover_at(store_dir, stamps[3]) == {("ns", "k"): (3, stamps[3])}


def test_retention_by_bytes_and_by_age(open_store: OpenStore, store_dir: str) -> None:
    store = open_store(retention=Retention(max_archives=None, max_age=None, max_bytes=1))
    for _ in range(3):
        store.set("ns", "k", os.urandom(2000))
        store.rotate()
    assert list_archives(store_dir) == []  # no archive fits in one byte
    store.close()
    aging = open_store(retention=Retention(max_archives=None, max_age=3600, max_bytes=None))
    aging.set("ns", "k", 1)
    aging.rotate()
    aging.rotate()
    assert len(list_archives(store_dir)) == 2  # young enough to keep


def test_keep_all_retention_keeps_every_archive(open_store: OpenStore, store_dir: str) -> None:
    store = open_store(retention=Retention.keep_all())
    first = store.set("ns", "k", 0)
    for i in range(1, 80):
        store.set("ns", "k", i)
        store.rotate()
    assert len(list_archives(store_dir)) == 79
    assert earliest_recoverable(store_dir) == 0
    assert recover_at(store_dir, first) == {("ns", "k"): (0, first)}


def test_rotation_on_an_empty_store_and_twice_in_a_row(open_store: OpenStore, store_dir: str) -> None:
    store = open_store()
    store.rotate()
    store.rotate()
    cuts = [a.cut for a in list_archives(store_dir)]
    assert len(cuts) == 2
    assert cuts[0] < cuts[1]
    ts = store.set("ns", "k", 1)
    assert ts > cuts[1]
