"""Point-in-time recovery against a recorded model of the history."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from kvcluster import Retention, Scope, StorageError
from kvcluster.journal import VersionedStore, earliest_recoverable, recover_at
from kvcluster.journal.archive import list_archives

OpenStore = Callable[..., VersionedStore]
State = dict[tuple[str, str], tuple[Any, int]]


class History:
    """Every journaled change with its timestamp, to compute the state at any moment."""

    def __init__(self) -> None:
        self.changes: list[tuple[int, str, str, Any]] = []  # ts, ns, key, value (None: removed)
        self.deleted = object()

    def set(self, store: VersionedStore, ns: str, key: str, value: Any, scope: Scope = Scope.PERMANENT) -> int:
        was_permanent = store.scope_of(ns, key) is Scope.PERMANENT
        ts = store.set(ns, key, value, scope=scope)
        if scope is Scope.PERMANENT:
            self.changes.append((ts, ns, key, value))
        elif was_permanent:
            self.changes.append((ts, ns, key, self.deleted))
        return ts

    def delete(self, store: VersionedStore, ns: str, key: str) -> int | None:
        was_permanent = store.scope_of(ns, key) is Scope.PERMANENT
        ts = store.delete(ns, key)
        if was_permanent:
            assert ts is not None
            self.changes.append((ts, ns, key, self.deleted))
        return ts

    def state_at(self, when: int) -> State:
        state: State = {}
        for ts, ns, key, value in self.changes:
            if ts > when:
                break
            if value is self.deleted:
                state.pop((ns, key), None)
            else:
                state[ns, key] = (value, ts)
        return state


def test_edges_before_on_between_and_after(open_store: OpenStore, store_dir: str) -> None:
    store = open_store()
    t1 = store.set("ns", "a", 1)
    t2 = store.set("ns", "b", 2)
    t3 = store.set("ns", "a", 3)
    t4 = store.delete("ns", "b")
    assert t4 is not None
    assert recover_at(store_dir, t1 - 1) == {}
    assert recover_at(store_dir, 0) == {}
    assert recover_at(store_dir, t1) == {("ns", "a"): (1, t1)}
    assert recover_at(store_dir, t2) == {("ns", "a"): (1, t1), ("ns", "b"): (2, t2)}
    assert recover_at(store_dir, t3 - 1) == {("ns", "a"): (1, t1), ("ns", "b"): (2, t2)}
    assert recover_at(store_dir, t3) == {("ns", "a"): (3, t3), ("ns", "b"): (2, t2)}
    assert recover_at(store_dir, t4) == {("ns", "a"): (3, t3)}
    assert recover_at(store_dir, 2**63) == {("ns", "a"): (3, t3)}


def test_points_inside_a_compacted_prefix_skip_rather_than_stop(open_store: OpenStore, store_dir: str) -> None:
    store = open_store(retention=Retention.keep_all())
    t_a1 = store.set("ns", "a", "a1")
    t_b = store.set("ns", "b", "b")
    t_a2 = store.set("ns", "a", "a2")  # the compacted prefix holds a(t_a2) before b(t_b)
    store.rotate()
    t_c = store.set("ns", "c", "c")
    store.rotate()  # now the prefix of the active journal is a(t_a2), b(t_b), c(t_c)
    assert recover_at(store_dir, t_b) == {("ns", "a"): ("a1", t_a1), ("ns", "b"): ("b", t_b)}
    assert recover_at(store_dir, t_a2) == {("ns", "a"): ("a2", t_a2), ("ns", "b"): ("b", t_b)}
    assert recover_at(store_dir, t_c)[("ns", "c")] == ("c", t_c)


def test_ephemeral_writes_are_not_history_but_their_removals_of_permanent_keys_are(
    open_store: OpenStore, store_dir: str
) -> None:
    store = open_store()
    t1 = store.set("ns", "k", "durable")
    store.set("ns", "e", "never journaled", scope=Scope.EPHEMERAL)
    t2 = store.set("ns", "k", "now in memory", scope=Scope.EPHEMERAL)
    assert recover_at(store_dir, t1) == {("ns", "k"): ("durable", t1)}
    assert recover_at(store_dir, t2) == {}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_100_random_points_of_a_recorded_history_across_rotations(
    open_store: OpenStore, store_dir: str, seed: int
) -> None:
    rng = random.Random(seed)
    history = History()
    store = open_store(buffer_size=4096, retention=Retention.keep_all())
    keys = [f"k{i}" for i in range(25)]
    for step in range(1500):
        ns = rng.choice(["a", "b"])
        key = rng.choice(keys)
        roll = rng.random()
        if roll < 0.65:
            history.set(store, ns, key, {"step": step, "pad": "x" * rng.randint(0, 60)})
        elif roll < 0.85:
            history.delete(store, ns, key)
        elif roll < 0.95:
            history.set(store, ns, key, step, scope=Scope.EPHEMERAL)
        elif roll < 0.99:
            store.rotate()
        else:
            store.close()
            store = open_store(buffer_size=4096, retention=Retention.keep_all())
    assert len(list_archives(store_dir)) > 10
    stamps = [ts for ts, *_ in history.changes]
    points = [rng.randint(stamps[0] - 5, stamps[-1] + 5) for _ in range(90)] + rng.sample(stamps, 10)
    for point in points:
        assert recover_at(store_dir, point) == history.state_at(point), point


def test_recover_at_refuses_a_damaged_archive_naming_file_and_offset(open_store: OpenStore, store_dir: str) -> None:
    store = open_store()
    for i in range(200):
        store.set("ns", f"k{i}", os.urandom(50))
    store.rotate()
    ts = store.set("ns", "later", 1)
    store.close()
    (archive,) = list_archives(store_dir)
    with open(archive.path, "r+b") as f:
        f.seek(archive.size // 2)
        f.write(b"\xff\x00\xff\x00")
    with pytest.raises(StorageError) as raised:
        recover_at(store_dir, ts)
    assert archive.path in str(raised.value)
    assert raised.value.path == archive.path
    assert raised.value.offset is not None


def test_recover_at_accepts_a_torn_tail_of_the_active_journal(open_store: OpenStore, store_dir: str) -> None:
    store = open_store()
    t1 = store.set("ns", "a", 1)
    store.set("ns", "b", 2)
    end = store.stats()["journal_bytes"]
    store.close()
    with open(os.path.join(store_dir, "journal"), "r+b") as f:
        f.seek(end - 2)
        f.write(b"\x00\x00")
    assert recover_at(store_dir, 2**63) == {("ns", "a"): (1, t1)}


def test_earliest_recoverable_and_the_refusal_message(open_store: OpenStore, store_dir: str) -> None:
    store = open_store(retention=Retention(max_archives=0, max_age=None, max_bytes=None))
    t1 = store.set("ns", "a", 1)
    assert earliest_recoverable(store_dir) == 0
    store.rotate()
    earliest = earliest_recoverable(store_dir)
    assert earliest > t1
    with pytest.raises(StorageError, match=f"cannot recover to {t1}: retention kept history back to {earliest}"):
        recover_at(store_dir, t1)
    assert recover_at(store_dir, earliest) == {("ns", "a"): (1, t1)}


def test_recover_at_on_an_empty_directory(tmp_path: Any) -> None:
    with pytest.raises(StorageError, match="holds no journal"):
        recover_at(str(tmp_path), 1)
