"""The RESP gateway tests' pieces (tests/resp/): a real cluster with its gateway, shared
by the whole directory, a throwaway redis-server to compare against, and raw-socket
helpers."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

import kvcluster
from kvcluster import Cluster
from kvtest.network import free_port

__all__ = ["Gateway", "call", "exchange", "gateway", "namespace", "redis_server"]

SHARDS = 2


@dataclass
class Gateway:
    cluster: Cluster
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def redis(self, **options: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30, **options)  # type: ignore[arg-type]


def call(client: redis.Redis, *args: object) -> Any:
    """`client.execute_command(*args)` (redis-py leaves it untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def exchange(sock: socket.socket, data: bytes, until: bytes, timeout: float = 10.0) -> bytes:
    """Send `data`, then read until the bytes received end with `until` (or the peer closes)."""
    sock.sendall(data)
    received = b""
    deadline = time.monotonic() + timeout
    while not received.endswith(until):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A real 2-shard cluster serving RESP on a free loopback port."""
    data: Path = tmp_path_factory.mktemp("resp")
    port = free_port()
    with kvcluster.start(data, shards=SHARDS, durability="none", resp=f"127.0.0.1:{port}") as cluster:
        yield Gateway(cluster, port)


@pytest.fixture
def namespace(gateway: Gateway, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of its own for the test (SELECT it), deleted afterwards."""
    name = "r-" + "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:100]
    with gateway.cluster.connect() as client:
        client.create_namespace(name)
        yield name
        client.delete_namespace(name)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    """A throwaway redis-server on loopback, for comparing answers."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (scripts/install-redis)")
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, protocol=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.01)
    try:
        yield client
    finally:
        client.close()
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        if process.poll() is None:
            process.kill()
            process.wait()
