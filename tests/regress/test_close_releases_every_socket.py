"""`close()` closes every socket a client opened, the coordinator's included, even
while the program still holds the closed client.

Regression: the sync client closed its shard links but not its link to the
coordinator, so a closed client kept that socket open until the object was freed (a
ResourceWarning then; a program keeping closed clients around held fds). The asyncio
client closed both already; this checks both."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import kvcluster
from kvcluster import Cluster

CLIENTS = 20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_closed_sync_client_holds_no_socket(cluster: Cluster) -> None:
    closed: list[Any] = []  # kept referenced: nothing may be freed behind close()'s back

    def use_one() -> None:
        client = kvcluster.Client(cluster.data_dir, timeout=10.0)
        client.namespace("default").set("close-check", 1)
        client.stats()  # the coordinator's link in use
        client.close()
        closed.append(client)

    use_one()  # imports, ZeroMQ's first context: whatever a first client keeps for good
    before = open_fds()
    for _ in range(CLIENTS):
        use_one()
    assert open_fds() == before


def test_a_closed_async_client_holds_no_socket(cluster: Cluster) -> None:
    closed: list[Any] = []

    async def use_one() -> None:
        client = await kvcluster.AsyncClient.connect(cluster.data_dir, timeout=10.0)
        await (await client.namespace("default")).set("close-check", 1)
        await client.stats()
        await client.close()
        closed.append(client)

    async def main() -> tuple[int, int]:
        await use_one()
        before = open_fds()
        for _ in range(CLIENTS):
            await use_one()
        return before, open_fds()

    before, after = asyncio.run(main())
    assert after == before
