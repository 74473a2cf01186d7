"""Cluster fixtures: real clusters (processes, sockets, files) for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kvcluster
from kvcluster import Client, Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real 3-shard cluster (processes, sockets, files), shared by a test module."""
    with local_cluster(tmp_path_factory) as running:
        yield running


def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    """A real 3-shard cluster in a fresh directory (a context manager: stopped on exit)."""
    data_dir: Path = tmp_path_factory.mktemp("cluster")
    return kvcluster.start(data_dir, shards=3, durability="interval")


def namespace_name(request: pytest.FixtureRequest, prefix: str) -> str:
    """A valid namespace name of the test's own, from its node name."""
    name = prefix + request.node.name.replace("[", "-").replace("]", "")[:100]
    return "".join(ch if ch.isalnum() or ch in "_.:-" else "_" for ch in name)


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with cluster.connect(timeout=10.0) as connected:
        yield connected


@pytest.fixture
def fresh_ns(client: Client, request: pytest.FixtureRequest) -> Iterator[kvcluster.Namespace]:
    """A namespace of its own for each test, deleted afterwards."""
    name = namespace_name(request, "t-")
    namespace = client.create_namespace(name)
    yield namespace
    client.delete_namespace(name)


class AwaitedNamespace:
    """An AsyncNamespace driven from synchronous test code: each call runs to completion
    on the fixture's event loop, so one test body checks both clients."""

    def __init__(self, namespace: kvcluster.AsyncNamespace, loop: asyncio.AbstractEventLoop) -> None:
        self.namespace = namespace
        self.loop = loop

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.namespace, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if hasattr(result, "__aiter__"):
                return iter(self.loop.run_until_complete(_collect(result)))
            return self.loop.run_until_complete(result)

        return call

    def __len__(self) -> int:
        return int(self.loop.run_until_complete(self.namespace.count()))


async def _collect(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, cluster: Cluster, fresh_ns: kvcluster.Namespace) -> Iterator[Any]:
    """The single-key API of a fresh namespace, through the sync and the asyncio client."""
    with sync_or_async(request.param, fresh_ns, str(cluster.data_dir)) as namespace:
        yield namespace


@contextlib.contextmanager
def sync_or_async(flavour: str, namespace: Any, address: str) -> Iterator[Any]:
    """`namespace` itself ("sync"), or ("async") its twin through a new asyncio client
    of `address`, each call run to completion: one test body checks both clients."""
    if flavour == "sync":
        yield namespace
        return
    loop = asyncio.new_event_loop()
    client: Any = loop.run_until_complete(kvcluster.connect_async(address, timeout=10.0))
    try:
        yield AwaitedNamespace(loop.run_until_complete(client.namespace(namespace.name)), loop)
    finally:
        loop.run_until_complete(client.close())
        loop.close()
