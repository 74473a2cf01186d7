"""Atomic batches and the store's side of two-phase commit."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from kvcluster import InvalidRequest, Scope
from kvcluster.journal import VersionedStore, recover_at
from kvcluster.values import pack_value

OpenStore = Callable[..., VersionedStore]
P, E = Scope.PERMANENT, Scope.EPHEMERAL


def v(value: object) -> bytes:
    return pack_value(value)


def test_a_batch_applies_every_change_at_one_timestamp(open_store: OpenStore) -> None:
    store = open_store()
    store.set("ns", "gone", 0)
    ts = store.batch_raw(b"ns", [(b"a", v(1), P), (b"b", v(2), P), (b"gone", None, P), (b"e", v(3), E)])
    assert store.get("ns", "a") == (1, ts)
    assert store.get("ns", "b") == (2, ts)
    assert store.get("ns", "e") == (3, ts)
    assert store.get("ns", "gone") is None
    store.close()
    reopened = open_store()
    assert reopened.get("ns", "a") == (1, ts)
    assert reopened.get("ns", "e") is None  # ephemeral: never journaled
    assert reopened.get("ns", "gone") is None


def test_an_ephemeral_value_in_a_batch_removes_the_permanent_one_for_good(open_store: OpenStore) -> None:
    store = open_store()
    store.set("ns", "k", "durable")
    store.batch_raw(b"ns", [(b"k", v("memory"), E)])
    store.close()
    assert open_store().get("ns", "k") is None


def test_a_torn_batch_record_applies_nothing(open_store: OpenStore, store_dir: str) -> None:
    store = open_store()
    store.set("ns", "before", 1)
    start = store.stats()["journal_bytes"]
    store.batch_raw(b"ns", [(f"k{i}".encode(), v(i), P) for i in range(50)])
    end = store.stats()["journal_bytes"]
    store.close()
    with open(os.path.join(store_dir, "journal"), "r+b") as f:
        f.seek(start + (end - start) // 2)
        f.write(bytes(end - start - (end - start) // 2))  # the record's second half never reached the disk
    reopened = open_store()
    assert reopened.count("ns") == 1  # only "before": no half of the batch
    assert [d.torn for d in reopened.damage] == [True]


def test_prepare_survives_reopen_and_commits_at_the_chosen_timestamp(open_store: OpenStore) -> None:
    store = open_store()
    store.set("ns", "old", 1)
    proposed = store.prepare_raw(b"ns", b"txn-1", 2**62, [(b"a", v("A"), P), (b"old", None, P)])
    assert store.get("ns", "a") is None  # prepared, not applied
    assert store.get("ns", "old") is not None
    store.close()
    store = open_store()
    assert list(store.prepared) == [b"txn-1"]
    assert store.prepared[b"txn-1"].ts == proposed
    chosen = proposed + 1000
    store.commit_raw(b"txn-1", chosen)
    assert store.get("ns", "a") == ("A", chosen)
    assert store.get("ns", "old") is None
    assert store.prepared == {}
    assert store.set("ns", "later", 1) > chosen  # the clock moved past the transaction
    store.close()
    assert open_store().get("ns", "a") == ("A", chosen)


def test_abort_drops_a_prepared_transaction(open_store: OpenStore) -> None:
    store = open_store()
    store.prepare_raw(b"ns", b"txn-2", 2**62, [(b"a", v("A"), P)])
    store.abort_raw(b"txn-2")
    assert store.prepared == {}
    store.close()
    reopened = open_store()
    assert reopened.prepared == {}
    assert reopened.get("ns", "a") is None


def test_preparing_the_same_transaction_twice_is_refused(open_store: OpenStore) -> None:
    store = open_store()
    store.prepare_raw(b"ns", b"txn", 2**62, [(b"a", v(1), P)])
    with pytest.raises(InvalidRequest):
        store.prepare_raw(b"ns", b"txn", 2**62, [(b"b", v(1), P)])


def test_a_prepared_transaction_survives_rotation(open_store: OpenStore) -> None:
    store = open_store(buffer_size=4096)
    store.prepare_raw(b"ns", b"txn-3", 2**62, [(b"x", v("X"), P)])
    for i in range(500):
        store.set("ns", f"k{i % 10}", i)
    assert store.rotations > 3
    store.close()
    store = open_store(buffer_size=4096)
    assert list(store.prepared) == [b"txn-3"]
    store.commit_raw(b"txn-3", store.prepared[b"txn-3"].ts + 1)
    assert store.get("ns", "x") is not None


def test_point_in_time_recovery_sees_a_transaction_from_its_commit(open_store: OpenStore, store_dir: str) -> None:
    store = open_store()
    proposed = store.prepare_raw(b"ns", b"txn-4", 2**62, [(b"a", v("A"), P)])
    between = store.set("ns", "other", 1)
    chosen = between + 10
    store.commit_raw(b"txn-4", chosen)
    batch_ts = store.batch_raw(b"ns", [(b"b", v("B"), P)])
    assert recover_at(store_dir, proposed) == {}
    assert ("ns", "a") not in recover_at(store_dir, chosen - 1)
    assert recover_at(store_dir, chosen)[("ns", "a")] == ("A", chosen)
    assert recover_at(store_dir, batch_ts)[("ns", "b")] == ("B", batch_ts)
    assert ("ns", "b") not in recover_at(store_dir, batch_ts - 1)
