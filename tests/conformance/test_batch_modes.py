"""set_many / get_many / delete_many / consume_many in both modes on both backends,
through the sync and the asyncio client. Keys of an ALL_OR_NOTHING batch share one
hash tag (`{b}`), so that on a Redis Cluster they share a slot; on the local engine
the tag is only part of the key, and they spread over every shard as usual."""

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

AON = BatchMode.ALL_OR_NOTHING
BEST = BatchMode.BEST_EFFORT
MODES = pytest.mark.parametrize("mode", [AON, BEST], ids=["aon", "best"])


def tagged(count: int, prefix: str = "k") -> dict[str, int]:
    """`count` keys of one hash slot (one tag), {b}k0000 -> 0 ..."""
    return {f"{{b}}{prefix}{i:04d}": i for i in range(count)}


@MODES
def test_set_many_writes_every_key_and_returns_timestamps_in_input_order(api: Any, mode: BatchMode) -> None:
    items = {f"{{b}}z{i}": i for i in range(30, 0, -1)}  # input order is not sorted order
    result = api.set_many(items, mode)
    assert isinstance(result, BatchResult)
    assert result.processed == 30 and result.errors is None and result.ok
    assert list(result.data) == list(items)
    for key, value in items.items():
        assert api.get_versioned(key) == (value, result.data[key])


def test_all_or_nothing_set_many_gives_every_key_one_timestamp(api: Any) -> None:
    api.set("{b}k0003", "older")
    result = api.set_many(tagged(40), AON)
    assert len(set(result.data.values())) == 1


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


def test_get_many_all_or_nothing_fails_on_a_missing_key_and_returns_no_data(api: Any) -> None:
    api.set_many(tagged(10), AON)
    with pytest.raises(BatchFailed) as failed:
        api.get_many([*tagged(10), "{b}nope-1", "{b}nope-2"], AON)
    assert set(failed.value.errors) == {"{b}nope-1", "{b}nope-2"}
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


def test_delete_many_all_or_nothing_deletes_nothing_when_a_key_is_missing(api: Any) -> None:
    api.set_many(tagged(20), AON)
    with pytest.raises(BatchFailed) as failed:
        api.delete_many([*tagged(20), "{b}gone"], AON)
    assert list(failed.value.errors) == ["{b}gone"]
    assert isinstance(failed.value.errors["{b}gone"], KeyNotFound)
    assert len(api) == 20


@MODES
def test_consume_many_returns_the_values_it_takes(api: Any, mode: BatchMode) -> None:
    api.set_many(tagged(12), AON)
    result = api.consume_many(list(tagged(12))[::-1], mode)
    assert list(result.data.items()) == list(tagged(12).items())[::-1]
    assert len(api) == 0


def test_consume_many_all_or_nothing_takes_nothing_when_a_key_is_missing(api: Any) -> None:
    api.set_many(tagged(12), AON)
    with pytest.raises(BatchFailed):
        api.consume_many([*tagged(12), "{b}gone"], AON)
    assert api.get_many(list(tagged(12)), AON).data == tagged(12)


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


def test_values_msgpack_cannot_carry_fail_per_key(api: Any) -> None:
    result = api.set_many({"good": 1, "bad": {1, 2}}, BEST)
    assert result.data.keys() == {"good"} and isinstance(result.errors["bad"], InvalidRequest)
    with pytest.raises(BatchFailed) as failed:
        api.set_many({"{b}good2": 1, "{b}bad": {1, 2}}, AON)
    assert list(failed.value.errors) == ["{b}bad"]
    assert not api.exists("{b}good2")


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


def test_max_keys_holds_for_batches(limited: Any) -> None:
    limited.set_many(tagged(20), AON)
    with pytest.raises(BatchFailed) as failed:
        limited.set_many(tagged(20, "more"), AON)  # 40 > 30
    assert all(isinstance(e, NamespaceFull) for e in failed.value.errors.values())
    assert len(limited) == 20
    result = limited.set_many(tagged(20, "more"), BEST)
    assert result.processed == 10 and len(result.errors) == 10
    assert all(isinstance(e, NamespaceFull) for e in result.errors.values())
    assert len(limited) == 30
    limited.set_many(tagged(20), AON)  # replacing existing keys needs no room
    limited.delete_many(list(tagged(20))[:5], AON)
    assert limited.set_many(tagged(5, "after"), AON).processed == 5
    with pytest.raises(BatchFailed):
        limited.set_many(tagged(1, "over"), AON)
