"""Scans, namespace administration and limits on both backends."""

from __future__ import annotations

from typing import Any

import pytest

from kvcluster import (
    BatchMode,
    InvalidRequest,
    NamespaceExists,
    NamespaceFull,
    NamespaceNotFound,
    ValueTooLarge,
)

BEST = BatchMode.BEST_EFFORT


def test_items_and_get_all_page_through_every_key_once(api: Any) -> None:
    expected = {f"key-{i:05d}": {"i": i} for i in range(2500)}  # several pages on every shard or node
    stamps = api.set_many(expected, BEST).data
    assert sorted(api.items()) == sorted(expected.items())
    assert api.get_all() == {key: (value, stamps[key]) for key, value in expected.items()}
    assert len(api) == 2500


def test_an_empty_namespace_scans_empty(ns: Any) -> None:
    assert list(ns.items()) == [] and ns.get_all() == {} and len(ns) == 0 and list(ns) == []


def test_namespaces_do_not_see_each_other(kv: Any, ns: Any) -> None:
    other = kv.create_namespace(ns.name + "-b")
    try:
        ns.set("k", 1)
        other.set("k", 2)
        assert (ns.get("k"), other.get("k")) == (1, 2)
        assert ns.get_all().keys() == other.get_all().keys() == {"k"}
        assert kv.namespace("default").get("k") is None
    finally:
        kv.delete_namespace(ns.name + "-b")
    assert ns.get("k") == 1


def test_namespace_administration(kv: Any) -> None:
    assert "default" in kv.namespaces()
    users = kv.create_namespace("admin-users", max_keys=5, max_value_bytes=100)
    try:
        with pytest.raises(NamespaceExists):
            kv.create_namespace("admin-users")
        with pytest.raises(NamespaceExists):
            kv.create_namespace("default")
        assert "admin-users" in kv.namespaces()
        assert kv.namespace("admin-users").stats() == {
            "name": "admin-users",
            "keys": 0,
            "max_keys": 5,
            "max_value_bytes": 100,
        }
        users.set("big", "x" * 50)
        assert users.stats()["keys"] == 1
        with pytest.raises(ValueTooLarge):
            users.set("big", "x" * 200)  # the limits given at creation hold
        kv.update_namespace("admin-users", max_value_bytes=1000)
        users.set("big", "x" * 200)
    finally:
        kv.delete_namespace("admin-users")
    assert "admin-users" not in kv.namespaces()
    with pytest.raises(NamespaceNotFound):
        kv.namespace("admin-users")
    with pytest.raises(NamespaceNotFound):
        users.get("big")
    with pytest.raises(NamespaceNotFound):
        users.set("new", 1)
    recreated = kv.create_namespace("admin-users")
    assert recreated.get("big") is None and len(recreated) == 0  # the old keys did not come back
    kv.delete_namespace("admin-users")


def test_missing_namespaces(kv: Any) -> None:
    with pytest.raises(NamespaceNotFound):
        kv.namespace("never-made")
    with pytest.raises(NamespaceNotFound):
        kv.update_namespace("never-made", max_keys=1)
    with pytest.raises(NamespaceNotFound):
        kv.delete_namespace("never-made")
    with pytest.raises(NamespaceNotFound):
        kv.namespace("bad name")


@pytest.mark.parametrize("name", ["", "../escape", "with space", "a|b", "{meta}", "x" * 129, 7], ids=repr)
def test_bad_namespace_names(kv: Any, name: Any) -> None:
    with pytest.raises(InvalidRequest):
        kv.create_namespace(name)


def test_the_default_namespace_always_exists(kv: Any) -> None:
    with pytest.raises(InvalidRequest, match="always exists"):
        kv.delete_namespace("default")
    assert kv.namespace("default").name == "default"


def test_bad_limits_are_refused(kv: Any, ns: Any) -> None:
    with pytest.raises(InvalidRequest):
        kv.create_namespace("bad-limits", max_keys=-1)
    with pytest.raises(InvalidRequest):
        kv.create_namespace("bad-limits", max_value_bytes="a lot")
    with pytest.raises(InvalidRequest):
        kv.update_namespace(ns.name, max_keys=True)
    assert "bad-limits" not in kv.namespaces()


def test_max_value_bytes(kv: Any, ns: Any) -> None:
    kv.update_namespace(ns.name, max_value_bytes=64)
    ns.set("small", "x" * 40)
    with pytest.raises(ValueTooLarge):
        ns.set("big", "x" * 100)
    with pytest.raises(ValueTooLarge):
        ns.update("small", "x" * 100)
    assert ns.get("small") == "x" * 40 and not ns.exists("big")
    kv.update_namespace(ns.name, max_value_bytes=0)
    ns.set("big", "x" * 100)


def test_max_keys(kv: Any, ns: Any) -> None:
    kv.update_namespace(ns.name, max_keys=3)
    for key in "abc":
        ns.set(key, 1)
    with pytest.raises(NamespaceFull):
        ns.set("d", 1)
    ns.set("a", 2)  # replacing a key needs no room
    ns.update("b", 2)
    assert ns.consume("c") == 1
    ns.set("d", 1)  # room again
    assert ns.delete("d")
    del ns["b"]
    ns.set_many({"x": 1, "y": 2}, BEST)
    with pytest.raises(NamespaceFull):
        ns["z"] = 1
    assert sorted(ns) == ["a", "x", "y"]
    kv.update_namespace(ns.name, max_keys=4)
    ns.set("z", 1)
    kv.update_namespace(ns.name, max_keys=0)
    ns.set_many({f"n{i}": i for i in range(10)}, BEST)
    assert len(ns) == 14


def test_max_keys_set_on_a_namespace_that_holds_keys(kv: Any, ns: Any) -> None:
    ns.set_many({f"k{i}": i for i in range(5)}, BEST)
    kv.update_namespace(ns.name, max_keys=6)
    ns.set("k5", 5)
    with pytest.raises(NamespaceFull):
        ns.set("k6", 6)
    assert len(ns) == 6


def test_stats_list_every_namespace(kv: Any, ns: Any) -> None:
    ns.set_many({"a": 1, "b": 2}, BEST)
    kv.update_namespace(ns.name, max_keys=10)
    stats = kv.stats()
    assert ns.name in stats["namespaces"] and "default" in stats["namespaces"]
    assert stats["namespace_stats"][ns.name] == {"keys": 2, "max_keys": 10, "max_value_bytes": 0}
    assert kv.ping()["ready"] is True
