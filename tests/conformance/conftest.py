"""The conformance suite's fixtures: every test runs against both backends — the local
engine (a real 3-shard cluster, kvtest.clusters' `cluster`) and a real 3-primary Redis
Cluster on loopback (kvtest.redis_cluster's `redis_cluster`) — through the public API
only: `kvcluster.connect(address)` and `kvcluster.connect_async(address)`. Both
clusters are started once for the suite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kvtest.backends import BACKENDS, Backend
from kvtest.clusters import local_cluster, namespace_name, sync_or_async

import kvcluster


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kvcluster.Cluster]:
    """kvtest.clusters' local 3-shard cluster, started once for the whole suite rather
    than once per module (each start costs seconds on a busy 2-core machine)."""
    with local_cluster(tmp_path_factory) as running:
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


@pytest.fixture
def ns(kv: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A namespace of its own for each test (sync proxy), deleted afterwards."""
    name = namespace_name(request, "c-")
    namespace = kv.create_namespace(name)
    yield namespace
    kv.delete_namespace(name)


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, backend: Backend, ns: Any) -> Iterator[Any]:
    """The API of a fresh namespace, through the sync and through the asyncio client."""
    with sync_or_async(request.param, ns, backend.address) as namespace:
        yield namespace
