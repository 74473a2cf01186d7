"""Cluster fixtures: real clusters (processes, sockets, files) for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import kvcluster
from kvcluster import Client, Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real 3-shard cluster (processes, sockets, files), shared by a test module."""
    data_dir: Path = tmp_path_factory.mktemp("cluster")
    with kvcluster.start(data_dir, shards=3, durability="interval") as running:
        yield running


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with cluster.connect(timeout=10.0) as connected:
        yield connected


@pytest.fixture
def fresh_ns(client: Client, request: pytest.FixtureRequest) -> Iterator[kvcluster.Namespace]:
    """A namespace of its own for each test, deleted afterwards."""
    name = "t-" + request.node.name.replace("[", "-").replace("]", "")[:100]
    name = "".join(ch if ch.isalnum() or ch in "_.:-" else "_" for ch in name)
    namespace = client.create_namespace(name)
    yield namespace
    client.delete_namespace(name)
