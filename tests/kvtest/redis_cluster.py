"""A real 3-primary Redis Cluster on loopback, from Debian's `redis-server`.

`RedisClusterProcesses` starts three `redis-server` processes (cluster mode, no
persistence, each in its own directory), joins them with `redis-cli --cluster create`,
and waits until every node reports `cluster_state:ok`; `stop()` terminates them
(SIGKILL after a grace period). The `redis_cluster` fixture runs one for the whole
session and yields its `redis+cluster://` address. Without `redis-server` the tests
that need it are skipped, naming the script that installs it.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RedisClusterProcesses", "free_cluster_ports", "redis_cluster"]

PRIMARIES = 3
START_TIMEOUT = 30.0  # seconds for the nodes to answer and the cluster to settle
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def free_cluster_ports(count: int) -> list[int]:
    """`count` loopback ports that are free, each with its cluster bus port (+10000) free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535 or port in ports or not _free(port + 10000):
            continue
        ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RedisClusterProcesses:
    """Three redis-server processes joined into one cluster, in `directory`."""

    def __init__(self, directory: Path, primaries: int = PRIMARIES) -> None:
        self.directory = directory
        self.ports = free_cluster_ports(primaries)
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        try:
            for port in self.ports:
                self.processes.append(self._server(port))
            self._wait("every node to answer PING", lambda port: self._cli(port, "PING") == "PONG")
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            created = subprocess.run(
                ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                timeout=START_TIMEOUT,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]!r} {created.stderr!r}")
            self._wait("cluster_state:ok on every node", self._settled)
        except BaseException:
            self.stop()
            raise

    def _server(self, port: int) -> subprocess.Popen[bytes]:
        node_dir = self.directory / f"node-{port}"
        node_dir.mkdir(parents=True, exist_ok=True)
        options = {
            "port": str(port),
            "bind": "127.0.0.1",
            "dir": str(node_dir),
            "cluster-enabled": "yes",
            "cluster-config-file": str(node_dir / "nodes.conf"),
            "cluster-node-timeout": "5000",
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
        }
        log = open(node_dir / "redis.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            return subprocess.Popen(
                [
                    "redis-server",
                    *itertools.chain.from_iterable((f"--{name}", value) for name, value in options.items()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()

    def _cli(self, port: int, *command: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *command],
            capture_output=True,
            timeout=5.0,
            check=False,
        )
        return done.stdout.decode(errors="replace").strip()

    def _settled(self, port: int) -> bool:
        info = self._cli(port, "CLUSTER", "INFO")
        return "cluster_state:ok" in info and f"cluster_known_nodes:{len(self.ports)}" in info

    def _wait(self, what: str, ready: Callable[[int], bool]) -> None:
        """Poll every node until `ready(port)` holds for all; RuntimeError past the deadline."""
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(self.ports)
        while pending:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {process.returncode}; see {self.directory}")
            pending = [port for port in pending if not ready(port)]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"waited {START_TIMEOUT:g} s for {what}; still waiting on ports {pending}")
            if pending:
                time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
        self.processes.clear()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The `redis+cluster://` address of a 3-primary Redis Cluster on loopback, for the session."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are not installed: run scripts/install-redis (scripts/setup does)")
    pytest.importorskip("redis", reason="redis-py is not installed: pip install 'kvcluster[redis]'")
    processes = RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster"))
    processes.start()
    try:
        yield processes.address
    finally:
        processes.stop()


@pytest.fixture(scope="module")
def raw_redis(redis_cluster: str) -> Iterator[Any]:
    """redis-py itself on that cluster, to look at (and tamper with) the stored bytes."""
    from redis.cluster import RedisCluster

    host, port = redis_cluster.removeprefix("redis+cluster://").split(",")[0].split(":")
    client = RedisCluster(host=host, port=int(port))
    yield client
    client.close()
