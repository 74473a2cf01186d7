"""Every single-key call and every error, against a real cluster, through the sync and
the asyncio client (the `api` fixture runs each test once with each)."""

from __future__ import annotations

from typing import Any

import pytest

import kvcluster
from kvcluster import (
    Client,
    InvalidRequest,
    KeyNotFound,
    Namespace,
    NamespaceExists,
    NamespaceNotFound,
    Scope,
    ValueTooLarge,
)

pytestmark = pytest.mark.slow


def test_set_returns_increasing_timestamps_and_get_reads_back(api: Any) -> None:
    first = api.set("a", {"name": "Alice"})
    second = api.set("a", {"name": "Alicia"})
    assert isinstance(first, int) and second > first
    assert api.get("a") == {"name": "Alicia"}
    assert api.get_versioned("a") == ({"name": "Alicia"}, second)
    assert api.get("missing") is None
    assert api.get("missing", default=7) == 7
    assert api.get_versioned("missing") is None


@pytest.mark.parametrize(
    "value", [None, True, 0, -(2**63), 2**64 - 1, 1.5, "", "ü", b"\x00" * 10, [1, [2]], {"a": {"b": None}}, {1: "x"}]
)
def test_every_msgpack_type_round_trips(api: Any, value: Any) -> None:
    api.set("k", value)
    assert api.get("k") == value


@pytest.mark.parametrize("value", [object(), {1, 2}, 2**64, complex(1, 1)], ids=repr)
def test_values_msgpack_cannot_carry_are_refused_in_the_client(api: Any, value: Any) -> None:
    with pytest.raises(InvalidRequest, match="cannot be stored"):
        api.set("k", value)
    assert not api.exists("k")


@pytest.mark.parametrize("key", ["", "x" * 1025, 5, b"bytes", None])
def test_bad_keys_are_refused(api: Any, key: Any) -> None:
    with pytest.raises(InvalidRequest):
        api.set(key, 1)
    with pytest.raises(InvalidRequest):
        api.get(key)


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


def test_the_mapping_protocol(fresh_ns: Namespace) -> None:
    fresh_ns["a"] = 1
    fresh_ns["b"] = [2]
    assert fresh_ns["a"] == 1
    assert "a" in fresh_ns and "zz" not in fresh_ns and 5 not in fresh_ns
    assert len(fresh_ns) == 2
    del fresh_ns["a"]
    with pytest.raises(KeyError):
        fresh_ns["a"]
    with pytest.raises(KeyNotFound):
        del fresh_ns["a"]
    assert sorted(fresh_ns) == ["b"]
    assert list(fresh_ns.values()) == [[2]]


def test_items_and_get_all_page_through_every_shard(api: Any) -> None:
    expected = {f"key-{i:05d}": {"i": i} for i in range(2500)}  # more than two pages per shard
    stamps = {key: api.set(key, value) for key, value in expected.items()}
    assert dict(api.items()) == expected
    assert api.get_all() == {key: (value, stamps[key]) for key, value in expected.items()}
    assert len(api) == 2500


def test_scopes_filter_get_all(api: Any) -> None:
    api.set("p", 1)
    api.set("e", 2, scope=Scope.EPHEMERAL)
    assert set(api.get_all(scope=Scope.PERMANENT)) == {"p"}
    assert set(api.get_all(scope=Scope.EPHEMERAL)) == {"e"}
    assert set(api.get_all()) == {"p", "e"}
    with pytest.raises(InvalidRequest):
        api.set("x", 1, scope="permanent")


def test_namespace_administration(client: Client) -> None:
    assert "default" in client.namespaces()
    users = client.create_namespace("admin-users", max_keys=5, max_value_bytes=100)
    try:
        with pytest.raises(NamespaceExists):
            client.create_namespace("admin-users")
        assert "admin-users" in client.namespaces()
        assert client.namespace("admin-users").stats() == {
            "name": "admin-users",
            "keys": 0,
            "max_keys": 5,
            "max_value_bytes": 100,
        }
        with pytest.raises(ValueTooLarge):
            users.set("big", "x" * 200)
        client.update_namespace("admin-users", max_value_bytes=1000)
        users.set("big", "x" * 200)
    finally:
        client.delete_namespace("admin-users")
    assert "admin-users" not in client.namespaces()
    with pytest.raises(NamespaceNotFound):
        client.namespace("admin-users")
    with pytest.raises(NamespaceNotFound):
        users.get("big")
    recreated = client.create_namespace("admin-users")
    assert recreated.get("big") is None  # the old keys did not come back
    client.delete_namespace("admin-users")


@pytest.mark.parametrize("name", ["", "../escape", "with space", "x" * 129, 7])
def test_bad_namespace_names(client: Client, name: Any) -> None:
    with pytest.raises(InvalidRequest):
        client.create_namespace(name)


def test_default_namespace_cannot_be_deleted(client: Client) -> None:
    with pytest.raises(InvalidRequest, match="always exists"):
        client.delete_namespace("default")


def test_bad_limits_are_refused(client: Client) -> None:
    with pytest.raises(InvalidRequest):
        client.create_namespace("bad-limits", max_keys=-1)
    with pytest.raises(InvalidRequest):
        client.create_namespace("bad-limits", max_value_bytes="a lot")  # type: ignore[arg-type]


def test_stats_has_the_documented_shape(client: Client, cluster: kvcluster.Cluster) -> None:
    stats = client.stats()
    assert stats["data_dir"] == cluster.data_dir
    assert stats["coordinator"]["pid"] > 0
    assert len(stats["shards"]) == 3
    for shard in stats["shards"]:
        for field in ("id", "pid", "endpoint", "keys", "journal_bytes", "rss_bytes", "cpu_percent", "ops_total"):
            assert field in shard, field
        assert shard["endpoint"].startswith("ipc://")
        assert shard["rss_bytes"] > 0
    assert "default" in stats["namespaces"]


def test_rotate_journals(client: Client, fresh_ns: Namespace) -> None:
    fresh_ns.set("before", 1)
    client.rotate_journals()
    assert fresh_ns.get("before") == 1
    assert all(shard["journal_bytes"] is not None for shard in client.stats()["shards"])
