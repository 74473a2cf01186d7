"""CURVE on the router (bar item 18): a client whose public key is in the cluster's
allowlist gets in; an unknown key, or no key at all, gets nothing through — not even
an error reply. A router beyond loopback without CURVE is refused at start."""

from __future__ import annotations

import asyncio
import os
import pickle
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from kvtest.network import free_port
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import Cluster, ClusterUnavailable, InvalidRequest, Timeout
from kvcluster.cli import main
from kvcluster.curve import allow, allowed_dir, generate, keys_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def curve_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str, Path]]:
    address = f"tcp://127.0.0.1:{free_port()}"
    data: Path = tmp_path_factory.mktemp("curve")
    with kvcluster.start(data / "cluster", shards=2, listen=address, curve=True) as cluster:
        yield cluster, address, data


def let_in(address: str, key: Path, server_key: Path) -> bool:
    """Whether the router answers this key now. (It reads its allowlist again within a
    second of a change; a handshake refused before that gets no answer.)"""
    try:
        with kvcluster.connect(address, key=key, server_key=server_key, timeout=0.5) as probe:
            probe.ping()
    except (Timeout, ClusterUnavailable):
        return False
    return True


def test_an_allowed_key_gets_in(curve_cluster: tuple[Cluster, str, Path]) -> None:
    cluster, address, data = curve_cluster
    result = CliRunner().invoke(main, ["keygen", "alice", "--out", str(data / "alice"), "--allow", cluster.data_dir])
    assert result.exit_code == 0, result.output
    server_key = keys_dir(cluster.data_dir) / "server.key"
    key = data / "alice" / "alice.key_secret"
    wait_until(lambda: let_in(address, key, server_key), "the router to read the new allowlist", timeout=15)
    with kvcluster.connect(address, key=key, server_key=server_key) as remote:
        users = remote.namespace("default")
        ts = users.set("from-alice", {"ok": True})
        assert users.get_versioned("from-alice") == ({"ok": True}, ts)
        copy = pickle.loads(pickle.dumps(users))  # a proxy carries its key paths along
        assert copy.get("from-alice") == {"ok": True}


def test_the_asyncio_client_with_an_allowed_key(curve_cluster: tuple[Cluster, str, Path]) -> None:
    cluster, address, data = curve_cluster
    public, secret = generate(data / "carol", "carol")
    CliRunner().invoke(main, ["keygen", "unused", "--out", str(data / "unused")])  # not allowed: no effect
    allow(cluster.data_dir, public)
    wait_until(lambda: let_in(address, secret, keys_dir(cluster.data_dir) / "server.key"), "carol let in", timeout=15)

    async def use() -> object:
        client = await kvcluster.AsyncClient.connect(
            address, key=secret, server_key=keys_dir(cluster.data_dir) / "server.key"
        )
        try:
            ns = await client.namespace("default")
            await ns.set("from-carol", 1)
            return await ns.get("from-carol")
        finally:
            await client.close()

    assert asyncio.run(use()) == 1


def test_an_unknown_key_gets_nothing_through(curve_cluster: tuple[Cluster, str, Path]) -> None:
    cluster, address, data = curve_cluster
    _public, secret = generate(data / "mallory", "mallory")  # made, never allowed
    server_key = keys_dir(cluster.data_dir) / "server.key"
    with pytest.raises((Timeout, ClusterUnavailable)):  # no answer, not even to the map request
        kvcluster.connect(address, key=secret, server_key=server_key, timeout=1.0).namespace("default").set("x", 1)
    with cluster.connect() as local:
        assert local.namespace("default").get("x") is None  # and nothing was written


def test_no_key_gets_nothing_through(curve_cluster: tuple[Cluster, str, Path]) -> None:
    _cluster, address, _data = curve_cluster
    with pytest.raises((Timeout, ClusterUnavailable)):
        kvcluster.connect(address, timeout=1.0).namespace("default").get("x")


def test_keys_are_kept_private(curve_cluster: tuple[Cluster, str, Path]) -> None:
    cluster, _address, _data = curve_cluster
    for folder in (keys_dir(cluster.data_dir), allowed_dir(cluster.data_dir)):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    secret = keys_dir(cluster.data_dir) / "server.key_secret"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600


def test_keys_are_never_overwritten_and_names_are_plain(tmp_path: Path) -> None:
    generate(tmp_path, "bob")
    with pytest.raises(InvalidRequest):
        generate(tmp_path, "bob")
    with pytest.raises(InvalidRequest):
        generate(tmp_path, "../escape")


def test_a_router_beyond_loopback_needs_curve(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="CURVE"):
        kvcluster.start(tmp_path / "open", shards=1, listen=f"tcp://0.0.0.0:{free_port()}", curve=False)


def test_client_keys_must_come_in_pairs_and_only_for_a_router(tmp_path: Path) -> None:
    _public, secret = generate(tmp_path, "dave")
    with pytest.raises(InvalidRequest, match="both"):
        kvcluster.connect("tcp://127.0.0.1:1", key=secret)
    with pytest.raises(InvalidRequest, match="tcp://"):
        kvcluster.connect(tmp_path, key=secret, server_key=secret)
