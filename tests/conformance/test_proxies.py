"""Proxies handed to other processes, and the asyncio twin's own calls, on both backends."""

from __future__ import annotations

import asyncio
import os
import pickle
from typing import Any

import multiprocess
import pytest
from kvtest.backends import Backend
from kvtest.workers import read_keys, write_range

import kvcluster


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_pool_of_workers_writes_through_pickled_proxies(ns: Any, method: str) -> None:
    with multiprocess.get_context(method).Pool(3) as pool:
        written = pool.map(write_range, [(ns, i * 100, (i + 1) * 100) for i in range(6)])
    stamps = dict(pair for chunk in written for pair in chunk)
    assert len(stamps) == 600 and len(ns) == 600
    versions = {key: ns.get_versioned(key) for key in stamps}
    assert all(found is not None and found[1] == stamps[key] for key, found in versions.items())
    writers = {found[0]["pid"] for found in versions.values() if found is not None}
    assert os.getpid() not in writers and len(writers) >= 2


def test_a_pickled_namespace_reads_in_a_spawned_worker(ns: Any) -> None:
    ns.set("a", 1)
    ns.set("b", [2])
    with multiprocess.get_context("spawn").Pool(1) as pool:
        assert pool.apply(read_keys, ((ns, ["a", "b", "c"]),)) == {"a": 1, "b": [2], "c": None}


def test_a_namespace_pickles_as_its_address(ns: Any) -> None:
    data = pickle.dumps(ns)
    assert len(data) < 400  # the address and the name, no sockets
    copy = pickle.loads(data)
    ns.set("x", 1)
    assert copy.get("x") == 1 and copy.name == ns.name
    assert copy.client is not ns.client
    with pickle.loads(pickle.dumps(ns.client)) as client:
        assert client.namespace(ns.name).get("x") == 1


def test_a_client_used_after_fork_makes_its_own_connections(ns: Any) -> None:
    ns.set("before", 1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: uses the inherited proxy, which must reconnect by itself
        try:
            ns.set("from-child", os.getpid())
            os.write(write, b"ok" if ns.get("before") == 1 else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 10) == b"ok" and status == 0
    ns.set("after", 2)  # the parent's connections still work
    assert ns.get("from-child") == pid and ns.get("after") == 2


def test_the_asyncio_client_administers_and_scans(backend: Backend) -> None:
    async def scenario() -> None:
        async with await kvcluster.connect_async(backend.address, timeout=10.0) as client:
            users = await client.create_namespace("async-users", max_keys=100)
            try:
                assert "async-users" in await client.namespaces()
                writes = await asyncio.gather(*(users.set(f"k{i}", i) for i in range(50)))
                assert len(set(writes)) >= 1 and await users.count() == 50
                assert dict([pair async for pair in users.items()]) == {f"k{i}": i for i in range(50)}
                await client.update_namespace("async-users", max_value_bytes=10)
                assert (await users.stats())["max_value_bytes"] == 10
                with pytest.raises(kvcluster.ValueTooLarge):
                    await users.set("big", "x" * 20)
                assert "async-users" in (await client.stats())["namespaces"]
            finally:
                await client.delete_namespace("async-users")
            with pytest.raises(kvcluster.NamespaceNotFound):
                await client.namespace("async-users")

    asyncio.run(scenario())
