"""Starting a cluster and connecting to one: `kvcluster.start()` and `kvcluster.connect()`.

`start()` launches the supervisor as a fresh interpreter (so the caller's script
needs no `__main__` guard), waits until every shard answers, and returns a `Cluster`
handle that stops it — on `stop()`, at the end of a `with` block, at interpreter exit,
or when the calling program dies (the supervisor watches it).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from kvcluster.actors.coordinator import CoordinatorConfig
from kvcluster.actors.supervision import MAX_RESTART_DELAY
from kvcluster.actors.supervisor import SupervisorConfig
from kvcluster.client.sync import Client
from kvcluster.codec import DEFAULT_MAX_MESSAGE
from kvcluster.config import DEFAULT_SHARD_BUFFER_SIZE, Durability, Retention
from kvcluster.datadir import DataDir, PidLock
from kvcluster.errors import ClusterUnavailable, InvalidRequest, KVError
from kvcluster.rediscluster.address import is_redis_cluster

if TYPE_CHECKING:
    from kvcluster.client.aio import AsyncClient
    from kvcluster.rediscluster.aio import AsyncRedisClusterClient
    from kvcluster.rediscluster.sync import RedisClusterClient

__all__ = ["Cluster", "connect", "connect_async", "launch", "start", "wait_until_ready"]

DEFAULT_START_TIMEOUT = 60.0


def connect(
    address: str | os.PathLike[str],
    *,
    timeout: float = 10.0,
    key: str | os.PathLike[str] | None = None,
    server_key: str | os.PathLike[str] | None = None,
) -> Client | RedisClusterClient:
    """A client of the cluster at `address`: a data directory, or a router's tcp://
    address. A router with CURVE needs `key` (this client's NAME.key_secret, allowed
    there) and `server_key` (the cluster's public key, DATA/keys/server.key).
    A `redis+cluster://host:port[,host:port...]` address is a Redis Cluster: the same
    API on it (docs/redis-cluster.md; needs `pip install 'kvcluster[redis]'`)."""
    if is_redis_cluster(address):
        from kvcluster import rediscluster

        _no_curve(key, server_key)
        return rediscluster.connect(address, timeout=timeout)
    return Client(address, timeout=timeout, key=key, server_key=server_key)


async def connect_async(
    address: str | os.PathLike[str],
    *,
    timeout: float = 10.0,
    key: str | os.PathLike[str] | None = None,
    server_key: str | os.PathLike[str] | None = None,
) -> AsyncClient | AsyncRedisClusterClient:
    """The asyncio twin of `connect`: `await kvcluster.connect_async(address)` is an
    `AsyncClient` (as `await AsyncClient.connect(address)`), or for a
    `redis+cluster://` address its Redis Cluster twin."""
    if is_redis_cluster(address):
        from kvcluster import rediscluster

        _no_curve(key, server_key)
        return await rediscluster.connect_async(address, timeout=timeout)
    from kvcluster.client.aio import AsyncClient

    return await AsyncClient.connect(address, timeout=timeout, key=key, server_key=server_key)


def _no_curve(key: object, server_key: object) -> None:
    if key is not None or server_key is not None:
        raise InvalidRequest("CURVE keys are for kvcluster routers; a Redis Cluster address takes none")


def _config(
    data_dir: str,
    shards: int | None,
    durability: str | Durability,
    max_namespaces: int,
    buffer_size: int,
    listen: str | None = None,
    retention: Retention | dict[str, Any] | None = None,
    curve: bool | None = None,
    max_restart_delay: float = MAX_RESTART_DELAY,
    resp: str | None = None,
) -> CoordinatorConfig:
    count = (os.cpu_count() or 1) if shards is None else shards
    if type(count) is not int or not 1 <= count <= 1024:
        raise InvalidRequest(f"shards must be 1..1024, not {shards!r}")
    if type(max_namespaces) is not int or max_namespaces < 0:
        raise InvalidRequest(f"max_namespaces must be >= 0 (0: no limit), not {max_namespaces!r}")
    if type(max_restart_delay) not in (int, float) or not 0 <= max_restart_delay <= 3600:
        raise InvalidRequest(f"max_restart_delay must be 0..3600 seconds, not {max_restart_delay!r}")
    return CoordinatorConfig(
        data_dir=os.path.abspath(data_dir),
        shards=count,
        durability=Durability.parse(durability).value,
        buffer_size=buffer_size,
        max_message=DEFAULT_MAX_MESSAGE,
        max_namespaces=max_namespaces,
        listen=_listen_address(listen, curve),
        retention=_retention_limits(retention),
        curve=bool(listen) and (curve if curve is not None else not _loopback(listen or "")),
        max_restart_delay=float(max_restart_delay),
        resp=None if resp is None else _resp_address(resp),
    )


def _resp_address(resp: str) -> str:
    """A RESP gateway address: host:port on loopback only (kvcluster.resp.gateway)."""
    from kvcluster.resp.gateway import parse_address

    parse_address(resp)
    return resp


def _retention_limits(retention: Retention | dict[str, Any] | None) -> dict[str, Any] | None:
    """The limits to record in the manifest: all of a Retention, those a dict names
    (checked here, so a bad one fails the start, not a shard), or None to keep them."""
    if retention is None:
        return None
    if isinstance(retention, Retention):
        return retention.to_dict()
    Retention.from_dict(retention)
    return dict(retention)


def _listen_address(listen: str | None, curve: bool | None) -> str | None:
    """A router address: tcp://host:port. Beyond loopback only with CURVE (the default
    there): a router that anyone on the network could use is refused."""
    if listen is None:
        return None
    if not listen.startswith("tcp://") or ":" not in listen[6:]:
        raise InvalidRequest(f"--listen takes tcp://host:port, not {listen!r}")
    if not _loopback(listen) and curve is False:
        raise InvalidRequest(
            f"the router at {listen} could be reached from other hosts: it needs CURVE keys "
            "(leave curve on, and let clients in with `kvcluster keygen NAME --allow DATA_DIR`)"
        )
    return listen


def _loopback(listen: str) -> bool:
    return listen[6:].rsplit(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]")


def _check_shard_count(path: str, shards: int | None) -> None:
    """An existing cluster keeps its shard count; changing it is `resize`, not `start`."""
    try:
        recorded = DataDir.at(path).read_manifest()["shards"]
    except ClusterUnavailable:
        return
    if shards is not None and shards != recorded:
        raise InvalidRequest(f"the cluster at {path} has {recorded} shards, not {shards} (use resize to grow it)")


def launch(config: SupervisorConfig, *, detach: bool) -> subprocess.Popen[bytes]:
    """Start the supervisor process; `detach` puts it in its own session (a daemon)."""
    data = DataDir.at(config.coordinator.data_dir)
    data.prepare()
    if PidLock(data.pidfile).held_elsewhere():
        raise ClusterUnavailable(f"a cluster is already running on {data.root}")
    if config.coordinator.resp is not None:
        from kvcluster.resp.gateway import check_address

        check_address(config.coordinator.resp)  # taken by another program: say so now, not after a timeout
    log = open(data.log_file("supervisor.stderr"), "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "kvcluster.actors.supervisor", config.to_json()],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=detach,
            close_fds=True,
        )
    finally:
        log.close()


def wait_until_ready(
    data_dir: str, process: subprocess.Popen[bytes] | None, timeout: float, resp: str | None = None
) -> None:
    """Return once every shard serves (and the RESP gateway at `resp`, if given);
    ClusterUnavailable if the cluster died or timed out."""
    from kvcluster.resp.gateway import ready_address

    deadline = time.monotonic() + timeout
    last: Exception | str | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ClusterUnavailable(f"the cluster exited with {process.returncode}; see {DataDir.at(data_dir).logs}")
        try:
            with Client(data_dir, timeout=1.0) as client:
                if client.ping().get("ready"):
                    if resp is None or ready_address(data_dir) == resp:
                        return
                    last = f"the RESP gateway does not serve {resp} yet"
        except KVError as exc:
            last = exc
        time.sleep(0.05)
    logs = DataDir.at(data_dir).logs
    raise ClusterUnavailable(f"the cluster at {data_dir} was not ready in {timeout:g} s ({last}); see {logs}")


class Cluster:
    """A running cluster started by this program; stopping it stops every process."""

    def __init__(
        self, data_dir: str, process: subprocess.Popen[bytes], temporary: bool, resp: str | None = None
    ) -> None:
        self.data_dir = data_dir
        self.process = process
        self.temporary = temporary
        self.resp = resp  # host:port of the RESP gateway, if it runs one
        self._clients: list[Client] = []
        atexit.register(self.stop)

    @property
    def address(self) -> str:
        return self.data_dir

    def connect(self, *, timeout: float = 10.0) -> Client:
        client = Client(self.data_dir, timeout=timeout)
        self._clients.append(client)
        return client

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the cluster gracefully (SIGTERM), forcefully after `timeout`."""
        atexit.unregister(self.stop)
        for client in self._clients:
            client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    shards: int | None = None,
    durability: str | Durability = Durability.INTERVAL,
    max_namespaces: int = 0,
    buffer_size: int = DEFAULT_SHARD_BUFFER_SIZE,
    listen: str | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    retention: Retention | None = None,
    curve: bool | None = None,
    max_restart_delay: float = MAX_RESTART_DELAY,
    resp: str | None = None,
) -> Cluster:
    """Start a local cluster in child processes and wait until it serves.

    `data_dir` defaults to a temporary directory removed on stop; `shards` to one per
    core. `retention` sets which archives every shard keeps (how far back point-in-time
    recovery reaches); it is kept in `cluster.json`, so None keeps what is recorded
    (the `Retention()` defaults for a new cluster). With `listen`, a router serves
    remote clients; `curve` (default: on unless it listens on loopback) lets in only
    clients with allowed CURVE keys (kvcluster.curve). A process that keeps dying soon
    after its restart is restarted after a growing delay, at most `max_restart_delay`
    seconds (a crash loop must not spin the CPU). With `resp` ("127.0.0.1:6380", loopback
    only), a gateway serves the Redis protocol there (docs/resp-gateway.md). The cluster stops with
    `Cluster.stop()`, at the end of a `with` block, at interpreter exit, or when this
    process dies.
    """
    if resp is not None:
        _resp_address(resp)  # refused before anything is made
    temporary = data_dir is None
    path = tempfile.mkdtemp(prefix="kvcluster-") if data_dir is None else os.path.abspath(os.fspath(data_dir))
    _check_shard_count(path, shards)
    config = SupervisorConfig(
        _config(
            path, shards, durability, max_namespaces, buffer_size, listen, retention, curve, max_restart_delay, resp
        ),
        watch_parent=os.getpid(),
    )
    process = launch(config, detach=False)
    try:
        wait_until_ready(path, process, timeout, resp)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return Cluster(path, process, temporary, resp)
