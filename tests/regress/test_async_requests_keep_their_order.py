"""Requests an asyncio client starts one after another reach their shard in that order,
also while its connection is still being made and while the socket buffer is full.

Regression: a request that found the connection ready wrote at once, overtaking
earlier requests still waiting for the connection (or for room in the buffer), so two
pipelined sets of one key could end with the first value (found through the RESP
gateway, whose differential test compares pipelines with redis-server)."""

from __future__ import annotations

import asyncio

import kvcluster
from kvcluster import Cluster

ROUNDS = 5
WRITES = 200  # per round, to one key, each started before the previous one answers
VALUE_BYTES = 48 << 10  # large enough that the writes fill the socket buffer


def test_pipelined_sets_of_one_key_apply_in_the_order_they_were_started(cluster: Cluster) -> None:
    async def round_trip(round_number: int) -> list[int]:
        key = f"ordered-{round_number}"
        client = await kvcluster.AsyncClient.connect(
            cluster.data_dir, timeout=30.0
        )  # a new client: not yet connected to any shard
        try:
            ns = await client.namespace("default")
            tasks = []
            for i in range(WRITES):
                tasks.append(asyncio.ensure_future(ns.set(key, [i, b"x" * VALUE_BYTES])))
                if i % 7 == 0:
                    await asyncio.sleep(0)  # let some start while the connection is being made
            stamps = await asyncio.gather(*tasks)
            final = await ns.get(key)
            assert final[0] == WRITES - 1, f"round {round_number}: the last write started was overtaken"
            return list(stamps)
        finally:
            await client.close()

    for round_number in range(ROUNDS):
        stamps = asyncio.run(round_trip(round_number))
        assert stamps == sorted(stamps), "timestamps out of order: the shard applied them in another order"
