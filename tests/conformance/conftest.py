"""The conformance suite's fixtures: every test runs against both backends — the local
engine (a real 3-shard cluster, kvtest.clusters' `cluster`) and a real 3-primary Redis
Cluster on loopback (kvtest.redis_cluster's `redis_cluster`) — through the public API
only: `kvcluster.connect(address)` and `kvcluster.connect_async(address)`. Both
clusters are started once for the suite."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from kvtest.backends import BACKENDS, Backend
from kvtest.clusters import AwaitedNamespace

import kvcluster


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kvcluster.Cluster]:
    """kvtest.clusters' local 3-shard cluster, started once for the whole suite rather
    than once per module (each start costs seconds on a busy 2-core machine)."""
    with kvcluster.start(tmp_path_factory.mktemp("cluster"), shards=3, durability="interval") as running:
        yield running


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend in turn; a module's tests run on one, then on the other."""
    if request.param == "local":
        return Backend("local", request.getfixturevalue("cluster").data_dir)
    return Backend("redis-cluster", request.getfixturevalue("redis_cluster"))


@pytest.fixture(scope="module")
def kv(backend: Backend) -> Iterator[Any]:
    """A sync client of the backend, shared by a module."""
    with backend.connect() as client:
        yield client


def _name(request: pytest.FixtureRequest) -> str:
    name = "c-" + request.node.name.replace("[", "-").replace("]", "")[:100]
    return "".join(ch if ch.isalnum() or ch in "_.:-" else "_" for ch in name)


@pytest.fixture
def ns(kv: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A namespace of its own for each test (sync proxy), deleted afterwards."""
    name = _name(request)
    namespace = kv.create_namespace(name)
    yield namespace
    kv.delete_namespace(name)


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, backend: Backend, ns: Any) -> Iterator[Any]:
    """The API of a fresh namespace, through the sync and through the asyncio client."""
    if request.param == "sync":
        yield ns
        return
    loop = asyncio.new_event_loop()
    client: Any = loop.run_until_complete(kvcluster.connect_async(backend.address, timeout=10.0))
    try:
        yield AwaitedNamespace(loop.run_until_complete(client.namespace(ns.name)), loop)
    finally:
        loop.run_until_complete(client.close())
        loop.close()
