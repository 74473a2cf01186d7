"""Jump consistent hash: published vectors, balance, and minimal movement on growth."""

from __future__ import annotations

from collections import Counter

import pytest

from kvcluster.router.clustermap import ClusterMap
from kvcluster.router.jump import jump_hash, key_digest, shard_for


def test_published_vectors() -> None:
    # from the paper's reference implementation, as other implementations test it
    assert jump_hash(256, 1024) == 520
    assert jump_hash(10863919174838991, 11) == 6
    assert jump_hash(2016238256797177309, 11) == 3
    assert jump_hash(0, 1) == 0


def test_digest_is_stable_and_separates_namespace_from_key() -> None:
    assert key_digest(b"users", b"u:1") == 0xF4949983D6E05237  # the same in every process
    assert key_digest(b"ab", b"c") != key_digest(b"a", b"bc")


@pytest.mark.parametrize("shards", [2, 3, 4, 7, 16, 64])
def test_growing_n_to_n_plus_one_moves_about_one_in_n_plus_one(shards: int) -> None:
    keys = [f"key-{i}".encode() for i in range(20_000)]
    moved = sum(shard_for(b"ns", k, shards) != shard_for(b"ns", k, shards + 1) for k in keys)
    expected = len(keys) / (shards + 1)
    assert abs(moved - expected) < 0.1 * expected
    for k in keys[:2000]:  # a key only ever moves to the new shard
        before, after = shard_for(b"ns", k, shards), shard_for(b"ns", k, shards + 1)
        assert after in (before, shards)


@pytest.mark.parametrize("shards", [2, 8, 32])
def test_keys_spread_evenly(shards: int) -> None:
    counts = Counter(shard_for(b"ns", f"k{i}".encode(), shards) for i in range(40_000))
    mean = 40_000 / shards
    assert max(abs(c - mean) for c in counts.values()) < 0.1 * mean


def test_bad_bucket_count() -> None:
    with pytest.raises(ValueError, match="buckets"):
        jump_hash(1, 0)


def test_cluster_map_round_trips_and_refuses_malformed_input() -> None:
    from kvcluster import InvalidRequest

    cluster_map = ClusterMap(3, ("ipc:///a", "ipc:///b"), "ipc:///c", ("/a.stream", "/b.stream"))
    assert ClusterMap.from_wire(cluster_map.to_wire()) == cluster_map
    malformed = [
        None,
        {},
        {"epoch": 0, "endpoints": ["x"], "coordinator": "c"},
        {"epoch": 1, "endpoints": [], "coordinator": "c"},
        {"epoch": 1, "endpoints": ["x"], "coordinator": "c", "streams": ["a", "b"]},
    ]
    for bad in malformed:
        with pytest.raises(InvalidRequest):
            ClusterMap.from_wire(bad)
