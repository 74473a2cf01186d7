"""The gateway as a process of the cluster: loopback only, supervised and restarted like
a shard, shown by `kvcluster status`, stopped with the cluster."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from kvtest.network import free_port
from kvtest.resp import Gateway
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import InvalidRequest
from kvcluster.process import pid_alive
from kvcluster.resp.gateway import parse_address

KVCLUSTER = [os.path.join(os.path.dirname(sys.executable), "kvcluster")]


@pytest.mark.parametrize(
    "address", ["0.0.0.0:6380", "192.168.1.10:6380", "[::]:6380", "example.com:6380", "10.0.0.1:6380"]
)
def test_a_non_loopback_address_is_refused_before_anything_starts(address: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="loopback addresses only"):
        kvcluster.start(tmp_path / "data", shards=1, resp=address)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:http"])
def test_a_malformed_address_is_refused(address: str) -> None:
    with pytest.raises(InvalidRequest, match="--resp"):
        parse_address(address)


def test_loopback_addresses_are_taken() -> None:
    assert parse_address("127.0.0.1:6380") == ("127.0.0.1", 6380)
    assert parse_address("127.5.6.7:1") == ("127.5.6.7", 1)
    assert parse_address("[::1]:6380") == ("::1", 6380)
    assert parse_address("localhost:6380") == ("localhost", 6380)


def test_the_cli_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    result = subprocess.run(
        [*KVCLUSTER, "start", "--data-dir", str(tmp_path / "d"), "--resp", "0.0.0.0:6380"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "loopback addresses only" in result.stderr


def test_a_port_in_use_is_refused_at_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidRequest, match="cannot listen there"):
            kvcluster.start(tmp_path / "data", shards=1, resp=f"127.0.0.1:{port}")


def test_status_shows_the_gateway(gateway: Gateway) -> None:
    out = subprocess.run(
        [*KVCLUSTER, "status", "--data-dir", gateway.cluster.data_dir, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    resp = json.loads(out)["resp"]
    assert resp["address"] == gateway.address
    assert resp["serving"] is True
    assert pid_alive(resp["pid"])
    assert resp["rss_bytes"] > 0
    table = subprocess.run(
        [*KVCLUSTER, "status", "--data-dir", gateway.cluster.data_dir],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    assert f"RESP gateway {gateway.address}: serving" in table


def test_the_gateway_is_restarted_after_kill_9_and_stops_with_the_cluster(tmp_path: Path) -> None:
    port = free_port()
    cluster = kvcluster.start(tmp_path / "data", shards=1, resp=f"127.0.0.1:{port}")
    try:
        client = cluster.connect()
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
        r.set("survives", "yes")
        pid = client.stats()["resp"]["pid"]
        os.kill(pid, signal.SIGKILL)

        def serving_again() -> bool:
            resp = client.stats()["resp"]
            return bool(resp["serving"] and resp["pid"] != pid)

        wait_until(serving_again, "the gateway restarted", timeout=30)
        assert client.stats()["resp"]["restarts"] == 1
        assert r.get("survives") == b"yes"  # redis-py reconnects by itself
        pid = client.stats()["resp"]["pid"]
        r.close()
    finally:
        cluster.stop()
    assert not pid_alive(pid)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # the port is free again
