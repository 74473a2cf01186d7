"""An old shard's copy passes during a resize, a slice at a time, over a real store.

The shard's loop serves requests between slices, so keys change in the middle of a
pass. Whatever changes, the rows queued for the new shards, replayed in order, must
leave every moving key as the store holds it, and no staying key may be sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from kvcluster.actors.shard_moves import SCAN_SLICE, Mover, remove_keys
from kvcluster.codec import Limits
from kvcluster.journal import VersionedStore
from kvcluster.router.jump import shards_for

NS = b"default"
KEYS = 3 * SCAN_SLICE  # several slices


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VersionedStore]:
    with VersionedStore.open(str(tmp_path / "shard"), buffer_size=16 << 20) as opened:
        for i in range(KEYS):
            opened.set("default", f"k{i}", i)
        yield opened


@pytest.fixture
def mover(store: VersionedStore) -> Iterator[Mover]:
    context: zmq.Context[Any] = zmq.Context()
    moving = Mover(0, store, context, zmq.Poller(), lambda envelope, payload: None, dict, Limits())
    moving.active, moving.to = True, 2  # shard 0 of 1 grows to 2: half the keys go
    yield moving
    context.term()


def drain(mover: Mover) -> None:
    """Finish the pass under way."""
    while mover.scan is not None:
        try:
            next(mover.scan)
        except StopIteration as done:
            mover.scan, mover.found = None, done.value


def deliver(mover: Mover, held: dict[bytes, Any]) -> dict[bytes, Any]:
    """Apply the queued rows to `held` (the new shard) and empty the queue, as the
    shard's loop does before it begins another pass."""
    for rows in mover.queue.values():
        for ns, key, value, _ts, _scope in rows:  # (one row a key in a pass: order is free)
            assert ns == NS
            if value is None:
                held.pop(key, None)
            else:
                held[key] = msgpack.unpackb(value)
    mover.queue.clear()
    return held


def moving_keys(store: VersionedStore) -> dict[bytes, Any]:
    permanent, _ephemeral = store.spaces_raw()
    keys = list(permanent.get(NS, {}))
    return {
        key: store.get("default", key.decode())[0]  # type: ignore[index]
        for key, bucket in zip(keys, shards_for(NS, keys, 2), strict=True)
        if bucket != 0
    }


def test_keys_changed_mid_pass_reach_the_new_shard(store: VersionedStore, mover: Mover) -> None:
    mover._begin_pass()
    assert mover.scan is not None
    next(mover.scan)  # the first slice is compared; the loop serves requests now
    moving = list(moving_keys(store))
    early = [key for key in moving if int(key[1:]) < SCAN_SLICE // 2]  # in the slice already compared
    late = [key for key in moving if int(key[1:]) > 2 * SCAN_SLICE]  # in a slice still to come
    store.set("default", early[0].decode(), "changed after its slice")
    store.set("default", late[0].decode(), "changed before its slice")
    store.delete("default", early[1].decode())
    store.delete("default", late[1].decode())
    fresh = next(f"new{i}" for i in range(1000) if shards_for(NS, [f"new{i}".encode()], 2)[0] == 1)
    store.set("default", fresh, "inserted mid-pass")
    drain(mover)
    new_shard = deliver(mover, {})
    mover._begin_pass()
    drain(mover)
    assert mover.found == 3  # what changed behind the first pass: a change, a removal, the insert
    assert deliver(mover, new_shard) == moving_keys(store)


def test_no_staying_key_is_sent(store: VersionedStore, mover: Mover) -> None:
    mover._begin_pass()
    drain(mover)
    sent = {key for rows in mover.queue.values() for _ns, key, *_rest in rows}
    assert sent == set(moving_keys(store))
    assert mover.moved == len(sent)
    mover._begin_pass()
    drain(mover)
    assert mover.found == 0  # nothing changed: nothing more to send


def test_the_switch_removes_exactly_what_was_sent(store: VersionedStore, mover: Mover) -> None:
    mover._begin_pass()
    drain(mover)
    moving = moving_keys(store)
    staying = {key for key in store.spaces_raw()[0][NS] if key not in moving}
    removed = remove_keys(store, {ns: list(sent) for ns, sent in mover.sent.items()})
    assert removed == mover.moved
    assert set(store.spaces_raw()[0][NS]) == staying
    some = [b"k0", b"k1", b"k2", b"k3"]
    present = [key for key in some if key in store.spaces_raw()[0][NS]]
    assert remove_keys(store, {NS: some}) == len(present)  # only keys still here are counted
    assert not any(key in store.spaces_raw()[0][NS] for key in some)
