"""A client that cannot reach the shards' local sockets goes through the router."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kvtest.network import free_port

import kvcluster
from kvcluster import Cluster, InvalidRequest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def routed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    address = f"tcp://127.0.0.1:{free_port()}"
    data: Path = tmp_path_factory.mktemp("routed")
    with kvcluster.start(data, shards=3, listen=address) as cluster:
        yield cluster, address


def test_a_remote_client_uses_the_whole_api(routed_cluster: tuple[Cluster, str]) -> None:
    cluster, address = routed_cluster
    with kvcluster.connect(address) as remote:
        users = remote.create_namespace("remote-users", max_keys=100)
        stamps = {f"u{i}": users.set(f"u{i}", {"i": i}) for i in range(60)}
        assert len(users) == 60
        assert users.get_all() == {key: ({"i": int(key[1:])}, ts) for key, ts in stamps.items()}
        assert users.consume("u0") == {"i": 0}
        assert "u0" not in users
        assert remote.stats()["namespaces"] == ["default", "remote-users"]
    local = cluster.connect().namespace("remote-users")
    assert local.get("u5") == {"i": 5}  # the same data, seen directly


def test_the_router_refuses_internal_and_shutdown_operations(routed_cluster: tuple[Cluster, str]) -> None:
    _cluster, address = routed_cluster
    with kvcluster.connect(address) as remote:
        with pytest.raises(InvalidRequest, match="not served through the router"):
            remote.shutdown()
        assert remote.ping()["ready"]
