"""max_keys is exact across shards: never exceeded by concurrent writers, and reached."""

from __future__ import annotations

import multiprocess
import pytest
from kvtest.workers import insert_until_full

from kvcluster import Client, NamespaceFull

pytestmark = pytest.mark.slow


def test_eight_concurrent_writers_fill_exactly_max_keys(client: Client) -> None:
    users = client.create_namespace("quota-eight", max_keys=500)
    try:
        with multiprocess.get_context("fork").Pool(8) as pool:
            results = pool.map(insert_until_full, [(users, f"w{w}", 200) for w in range(8)])
        inserted = sum(done for done, _refused in results)
        refused = sum(refused for _done, refused in results)
        assert inserted == 500
        assert refused == 8 * 200 - 500
        assert len(users) == 500
        with pytest.raises(NamespaceFull):
            users.set("one-more", 1)
        users.set("w0-0", "updating an existing key is allowed at the limit")
        for i in range(10):
            assert users.delete(f"w{i % 8}-{i // 8}") or users.delete(f"w{(i + 1) % 8}-{i // 8}")
        freed = 500 - len(users)
        for i in range(freed):
            users.set(f"again-{i}", i)
        assert len(users) == 500
        with pytest.raises(NamespaceFull):
            users.set("still-full", 1)
    finally:
        client.delete_namespace("quota-eight")


def test_max_keys_changes_at_run_time(client: Client) -> None:
    small = client.create_namespace("quota-change", max_keys=5)
    try:
        for i in range(5):
            small.set(f"k{i}", i)
        with pytest.raises(NamespaceFull):
            small.set("k5", 5)
        client.update_namespace("quota-change", max_keys=8)
        for i in range(5, 8):
            small.set(f"k{i}", i)
        with pytest.raises(NamespaceFull):
            small.set("k8", 8)
        client.update_namespace("quota-change", max_keys=4)  # below what it holds
        with pytest.raises(NamespaceFull):
            small.set("new", 1)
        for i in range(5):
            small.delete(f"k{i}")  # 3 left: one insert fits under 4
        small.set("fits", 1)
        with pytest.raises(NamespaceFull):
            small.set("does-not", 1)
        client.update_namespace("quota-change", max_keys=0)  # 0: unlimited
        for i in range(50):
            small.set(f"many{i}", i)
        assert len(small) == 54
    finally:
        client.delete_namespace("quota-change")


def test_ephemeral_keys_count_against_max_keys(client: Client) -> None:
    from kvcluster import Scope

    mixed = client.create_namespace("quota-mixed", max_keys=3)
    try:
        mixed.set("a", 1)
        mixed.set("b", 1, scope=Scope.EPHEMERAL)
        mixed.set("c", 1)
        with pytest.raises(NamespaceFull):
            mixed.set("d", 1, scope=Scope.EPHEMERAL)
    finally:
        client.delete_namespace("quota-mixed")
