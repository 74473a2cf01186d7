"""Regression: `Namespace.stats()["keys"]` was always 0 — the coordinator asked each shard
for its count under map epoch 0, shards refused it as a stale epoch, and the refusals
summed to nothing (found by the soak)."""

from __future__ import annotations

import asyncio

import kvcluster
from kvcluster import Client, Cluster


def test_namespace_stats_count_the_keys(cluster: Cluster, client: Client) -> None:
    namespace = client.create_namespace("counted")
    try:
        for i in range(25):  # single writes: applied when acknowledged (a batch's commits
            namespace.set(f"k{i}", i)  # reach the shards just after set_many returns)
        assert namespace.stats()["keys"] == len(namespace) == 25
        assert client.stats()["namespace_stats"]["counted"]["keys"] == 25

        async def counted() -> int:
            async with kvcluster.AsyncClient(cluster.data_dir) as aio:
                stats = await (await aio.namespace("counted")).stats()
                return int(stats["keys"])

        assert asyncio.run(counted()) == 25
    finally:
        client.delete_namespace("counted")
