"""set_many / get_many / delete_many / consume_many in both modes on both backends,
through the sync and the asyncio client. Keys of most ALL_OR_NOTHING batches share one
hash tag (`{b}`), so that on a Redis Cluster they share a slot (one script); the tests
marked LAYOUTS run them also over keys of three slots on three nodes (`spread`: the
commit protocol of kvcluster/rediscluster/txn.py), where the backends must agree just
the same. On the local engine a tag is only part of the key, and keys spread over
every shard as usual."""

from __future__ import annotations

from typing import Any

import pytest

from kvcluster import (
    BatchFailed,
    BatchMode,
    BatchResult,
    InvalidRequest,
    KeyNotFound,
    NamespaceFull,
    Scope,
    ValueTooLarge,
)
from kvcluster.rediscluster.layout import value_key
from kvcluster.rediscluster.slots import SLOTS, key_slot

AON = BatchMode.ALL_OR_NOTHING
BEST = BatchMode.BEST_EFFORT
MODES = pytest.mark.parametrize("mode", [AON, BEST], ids=["aon", "best"])
LAYOUTS = pytest.mark.parametrize("layout", ["one-slot", "three-slots"])
TAGS = "abc"  # slots 15495, 3300, 7365: one in each third, so on each primary of a 3-node cluster


def tagged(count: int, prefix: str = "k") -> dict[str, int]:
    """`count` keys of one hash slot (one tag), {b}k0000 -> 0 ..."""
    return {f"{{b}}{prefix}{i:04d}": i for i in range(count)}


def spread(count: int, prefix: str = "k") -> dict[str, int]:
    """`count` keys over three slots on three Redis nodes, {a}k0000 -> 0, {b}k0001 -> 1 ..."""
    return {f"{{{TAGS[i % 3]}}}{prefix}{i:04d}": i for i in range(count)}


def keyset(layout: str, count: int, prefix: str = "k") -> dict[str, int]:
    return tagged(count, prefix) if layout == "one-slot" else spread(count, prefix)


def gone(layout: str, *names: str) -> list[str]:
    """Keys that do not exist: in the batch's one slot, or in as many slots as names."""
    return [f"{{{'b' if layout == 'one-slot' else TAGS[i % 3]}}}{name}" for i, name in enumerate(names)]


def test_spread_keys_lie_on_every_node_of_a_three_node_redis_cluster() -> None:
    slots = {key_slot(value_key(b"ns", key.encode())) for key in spread(3)}
    assert len(slots) == 3 and {slot * 3 // SLOTS for slot in slots} == {0, 1, 2}


@MODES
def test_set_many_writes_every_key_and_returns_timestamps_in_input_order(api: Any, mode: BatchMode) -> None:
    items = {f"{{b}}z{i}": i for i in range(30, 0, -1)}  # input order is not sorted order
    result = api.set_many(items, mode)
    assert isinstance(result, BatchResult)
    assert result.processed == 30 and result.errors is None and result.ok
    assert list(result.data) == list(items)
    for key, value in items.items():
        assert api.get_versioned(key) == (value, result.data[key])


@LAYOUTS
def test_all_or_nothing_set_many_gives_every_key_one_timestamp(api: Any, layout: str) -> None:
    items = keyset(layout, 40)
    older = api.set(list(items)[3], "older")
    result = api.set_many(items, AON)
    assert result.processed == 40 and list(result.data) == list(items)
    (ts,) = set(result.data.values())
    assert ts > older
    assert all(api.get_versioned(key) == (value, ts) for key, value in items.items())


@LAYOUTS
def test_all_or_nothing_batches_read_delete_and_consume_whole(api: Any, layout: str) -> None:
    items = keyset(layout, 24)
    keys = list(items)[::-1]
    api.set_many(items, AON)
    assert list(api.get_many(keys, AON).data.items()) == [(key, items[key]) for key in keys]
    consumed = api.consume_many(keys[:12], AON)
    assert list(consumed.data.items()) == [(key, items[key]) for key in keys[:12]] and consumed.processed == 12
    deleted = api.delete_many(keys[12:], AON)
    assert list(deleted.data) == keys[12:] and len(set(deleted.data.values())) == 1
    assert len(api) == 0
    assert api.get_many(keys, BEST).processed == 0


def test_set_many_takes_pairs_and_a_scope(api: Any) -> None:
    api.set_many([("{b}p1", 1), ("{b}p2", 2)], AON, scope=Scope.EPHEMERAL)
    assert api.get_all(scope=Scope.EPHEMERAL).keys() == {"{b}p1", "{b}p2"}
    assert api.get_all(scope=Scope.PERMANENT) == {}


@MODES
def test_get_many_returns_values_in_input_order(api: Any, mode: BatchMode) -> None:
    api.set_many(tagged(25), AON)
    keys = [f"{{b}}k{i:04d}" for i in (7, 3, 24, 0)]
    result = api.get_many(keys, mode)
    assert list(result.data.items()) == [(key, int(key[4:])) for key in keys]
    assert result.processed == 4 and result.errors is None


def test_get_many_best_effort_lists_missing_keys_as_errors(api: Any) -> None:
    api.set_many({"a": 1, "b": 2}, BEST)
    result = api.get_many(["a", "missing", "b"], BEST)
    assert result.data == {"a": 1, "b": 2} and result.processed == 2
    assert list(result.errors) == ["missing"]
    assert isinstance(result.errors["missing"], KeyNotFound)


@LAYOUTS
def test_get_many_all_or_nothing_fails_on_a_missing_key_and_returns_no_data(api: Any, layout: str) -> None:
    api.set_many(keyset(layout, 10), AON)
    missing = gone(layout, "nope-1", "nope-2")
    with pytest.raises(BatchFailed) as failed:
        api.get_many([*keyset(layout, 10), *missing], AON)
    assert set(failed.value.errors) == set(missing)
    assert all(isinstance(e, KeyNotFound) for e in failed.value.errors.values())


def test_get_many_reads_a_repeated_key_once(api: Any) -> None:
    api.set("a", 1)
    assert api.get_many(["a", "a"], AON).data == {"a": 1}


@MODES
def test_delete_many_removes_keys_and_reports_missing_ones(api: Any, mode: BatchMode) -> None:
    api.set_many(tagged(20), AON)
    present = list(tagged(20))[:10]
    result = api.delete_many(present, mode)
    assert result.processed == 10 and list(result.data) == present
    assert all(isinstance(ts, int) for ts in result.data.values())
    assert not any(api.exists(key) for key in present)
    if mode is BEST:
        result = api.delete_many(["{b}k0015", "gone"], mode)
        assert result.processed == 1 and set(result.errors) == {"gone"}
        assert isinstance(result.errors["gone"], KeyNotFound)
        assert not api.exists("{b}k0015")


@LAYOUTS
def test_delete_many_all_or_nothing_deletes_nothing_when_a_key_is_missing(api: Any, layout: str) -> None:
    api.set_many(keyset(layout, 20), AON)
    missing = gone(layout, "gone", "gone-too")  # three slots: the first key's, and another
    with pytest.raises(BatchFailed) as failed:
        api.delete_many([*keyset(layout, 20), *missing], AON)
    assert list(failed.value.errors) == missing
    assert all(isinstance(error, KeyNotFound) for error in failed.value.errors.values())
    assert len(api) == 20


@MODES
def test_consume_many_returns_the_values_it_takes(api: Any, mode: BatchMode) -> None:
    api.set_many(tagged(12), AON)
    result = api.consume_many(list(tagged(12))[::-1], mode)
    assert list(result.data.items()) == list(tagged(12).items())[::-1]
    assert len(api) == 0


@LAYOUTS
def test_consume_many_all_or_nothing_takes_nothing_when_a_key_is_missing(api: Any, layout: str) -> None:
    api.set_many(keyset(layout, 12), AON)
    (missing,) = gone(layout, "a-gone", "b-gone")[1:]  # not in the first key's slot
    with pytest.raises(BatchFailed) as failed:
        api.consume_many([*keyset(layout, 12), missing], AON)
    assert list(failed.value.errors) == [missing]
    assert api.get_many(list(keyset(layout, 12)), AON).data == keyset(layout, 12)


def test_consume_many_best_effort_takes_what_exists(api: Any) -> None:
    api.set_many({"a": 1, "b": 2}, BEST)
    result = api.consume_many(["a", "gone", "b"], BEST)
    assert result.data == {"a": 1, "b": 2} and set(result.errors) == {"gone"}


@MODES
def test_empty_batches_do_nothing(api: Any, mode: BatchMode) -> None:
    for method in (api.get_many, api.delete_many, api.consume_many):
        assert method([], mode) == BatchResult(0, {})
    assert api.set_many({}, mode) == BatchResult(0, {})


@pytest.mark.parametrize(
    "call",
    [
        lambda ns: ns.set_many([("a", 1), ("a", 2)]),
        lambda ns: ns.delete_many(["a", "a"]),
        lambda ns: ns.consume_many(["a", "a"], BEST),
        lambda ns: ns.set_many({"a": 1}, "all"),
        lambda ns: ns.set_many({5: 1}),
        lambda ns: ns.get_many(["ok", b"bytes"]),
        lambda ns: ns.set_many([("a", 1, 2)]),
        lambda ns: ns.set_many({"a": 1}, scope="permanent"),
    ],
    ids=["dup-set", "dup-delete", "dup-consume", "bad-mode", "int-key", "bytes-key", "triple", "bad-scope"],
)
def test_bad_batches_are_refused_before_anything_is_sent(api: Any, call: Any) -> None:
    with pytest.raises(InvalidRequest):
        call(api)
    assert not api.exists("a")


@LAYOUTS
def test_values_msgpack_cannot_carry_fail_per_key(api: Any, layout: str) -> None:
    result = api.set_many({"good": 1, "bad": {1, 2}}, BEST)
    assert result.data.keys() == {"good"} and isinstance(result.errors["bad"], InvalidRequest)
    good, bad = gone(layout, "good2", "bad")
    with pytest.raises(BatchFailed) as failed:
        api.set_many({good: 1, bad: {1, 2}}, AON)
    assert list(failed.value.errors) == [bad]
    assert not api.exists(good)


def test_a_best_effort_batch_larger_than_one_pipeline(ns: Any) -> None:
    items = {f"big{i:05d}": i for i in range(4500)}  # more than PIPELINE_CHUNK (4096) commands
    assert ns.set_many(items, BEST).processed == 4500
    assert ns.get_many(list(items), BEST).data == items
    assert ns.delete_many(list(items), BEST).processed == 4500
    assert len(ns) == 0


# -- namespace limits (sync client) ---------------------------------------------------


@pytest.fixture
def limited(kv: Any, ns: Any) -> Any:
    kv.update_namespace(ns.name, max_keys=30, max_value_bytes=64)
    return ns


def test_value_limit_fails_one_key_best_effort_and_the_whole_batch_all_or_nothing(limited: Any) -> None:
    items = {**tagged(10), "huge": "x" * 100}
    result = limited.set_many(items, BEST)
    assert result.processed == 10 and isinstance(result.errors["huge"], ValueTooLarge)
    with pytest.raises(BatchFailed) as failed:
        limited.set_many({**tagged(10, "n"), "{b}huge": "x" * 100}, AON)
    assert isinstance(failed.value.errors["{b}huge"], ValueTooLarge)
    assert not any(limited.exists(key) for key in tagged(10, "n"))


@LAYOUTS
def test_max_keys_holds_for_batches(limited: Any, layout: str) -> None:
    limited.set_many(keyset(layout, 20), AON)
    with pytest.raises(BatchFailed) as failed:
        limited.set_many(keyset(layout, 20, "more"), AON)  # 40 > 30
    assert all(isinstance(e, NamespaceFull) for e in failed.value.errors.values())
    assert len(limited) == 20
    result = limited.set_many(keyset(layout, 20, "more"), BEST)
    assert result.processed == 10 and len(result.errors) == 10
    assert all(isinstance(e, NamespaceFull) for e in result.errors.values())
    assert len(limited) == 30
    limited.set_many(keyset(layout, 20), AON)  # replacing existing keys needs no room
    limited.delete_many(list(keyset(layout, 20))[:5], AON)
    assert limited.set_many(keyset(layout, 5, "after"), AON).processed == 5
    with pytest.raises(BatchFailed):
        limited.set_many(keyset(layout, 1, "over"), AON)
