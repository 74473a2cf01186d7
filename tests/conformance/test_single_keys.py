"""Single keys on both backends, through the sync and the asyncio client: values of
every msgpack type, keys and values refused, update/consume/exists/delete, scopes,
timestamps, the mapping protocol."""

from __future__ import annotations

from typing import Any

import pytest

from kvcluster import InvalidRequest, KeyNotFound, Scope


def test_set_returns_increasing_timestamps_and_get_reads_back(api: Any) -> None:
    first = api.set("a", {"name": "Alice"})
    second = api.set("a", {"name": "Alicia"})
    assert isinstance(first, int) and second > first
    assert api.get("a") == {"name": "Alicia"}
    assert api.get_versioned("a") == ({"name": "Alicia"}, second)
    assert api.get("missing") is None
    assert api.get("missing", default=7) == 7
    assert api.get_versioned("missing") is None


def test_timestamps_of_one_key_strictly_increase(api: Any) -> None:
    stamps = [api.set("k", i) for i in range(50)]
    assert stamps == sorted(set(stamps))
    api.update("k", "changed")
    assert api.get_versioned("k")[1] > stamps[-1]


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        -(2**63),
        2**64 - 1,
        1.5,
        float("inf"),
        "",
        "ünïcödé ✓",
        b"",
        b"\x00\xff" * 8,
        [],
        [1, [2, [3]]],
        {},
        {"a": {"b": None}},
        {1: "x", 2.5: "y"},
    ],
    ids=repr,
)
def test_every_msgpack_type_round_trips(api: Any, value: Any) -> None:
    api.set("k", value)
    assert api.get("k") == value


@pytest.mark.parametrize("value", [object(), {1, 2}, 2**64, complex(1, 1)], ids=repr)
def test_values_msgpack_cannot_carry_are_refused_in_the_client(api: Any, value: Any) -> None:
    with pytest.raises(InvalidRequest, match="cannot be stored"):
        api.set("k", value)
    assert not api.exists("k")


@pytest.mark.parametrize("key", ["", "x" * 1025, 5, b"bytes", None, "\ud800"], ids=repr)
def test_bad_keys_are_refused(api: Any, key: Any) -> None:
    with pytest.raises(InvalidRequest):
        api.set(key, 1)
    with pytest.raises(InvalidRequest):
        api.get(key)


@pytest.mark.parametrize("key", ["a|b", "{tag}x", "*", "kv|other|x", "ключ", "x" * 1024, " "])
def test_any_valid_key_round_trips_and_scans_back(api: Any, key: str) -> None:
    api.set(key, key)
    assert api.get(key) == key
    assert dict(api.items()) == {key: key}


def test_update_consume_exists_delete(api: Any) -> None:
    with pytest.raises(KeyNotFound):
        api.update("k", 1)
    assert not api.exists("k")
    api.set("k", 1)
    assert api.update("k", 2) == 1
    assert api.get("k") == 2
    assert api.exists("k")
    assert api.consume("k") == 2
    assert not api.exists("k")
    with pytest.raises(KeyNotFound):
        api.consume("k")
    api.set("d", 1)
    assert api.delete("d") is True
    assert api.delete("d") is False


def test_update_keeps_the_scope(api: Any) -> None:
    api.set("e", 1, scope=Scope.EPHEMERAL)
    api.update("e", 2)
    assert api.get_all(scope=Scope.EPHEMERAL) == {"e": api.get_all()["e"]}
    assert api.get_all(scope=Scope.PERMANENT) == {}


def test_scopes_filter_get_all_and_items(api: Any) -> None:
    api.set("p", 1)
    api.set("e", 2, scope=Scope.EPHEMERAL)
    assert set(api.get_all(scope=Scope.PERMANENT)) == {"p"}
    assert set(api.get_all(scope=Scope.EPHEMERAL)) == {"e"}
    assert dict(api.items(scope=Scope.EPHEMERAL)) == {"e": 2}
    assert set(api.get_all()) == {"p", "e"}
    with pytest.raises(InvalidRequest):
        api.set("x", 1, scope="permanent")


def test_the_mapping_protocol(ns: Any) -> None:
    ns["a"] = 1
    ns["b"] = [2]
    assert ns["a"] == 1
    assert "a" in ns and "zz" not in ns and 5 not in ns
    assert len(ns) == 2
    del ns["a"]
    with pytest.raises(KeyError):
        ns["a"]
    with pytest.raises(KeyNotFound):
        del ns["a"]
    assert sorted(ns) == ["b"]
    assert list(ns.keys()) == ["b"]
    assert list(ns.values()) == [[2]]
