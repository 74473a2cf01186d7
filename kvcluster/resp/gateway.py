"""The RESP gateway process: `kvcluster start --resp 127.0.0.1:6380`.

The coordinator starts it (spawn method) and restarts it like a shard; it serves the
Redis protocol on a loopback address and reaches the cluster as an ordinary local
client (`AsyncClient` over the data directory's sockets). Once it listens it writes
DATA/run/resp.ready (its pid and address), which `kvcluster.start()` and `kvcluster
status` read. SIGTERM stops it.

RESP has no encryption here and the gateway no passwords, so it binds loopback
addresses only: `parse_address` refuses any other, before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Final

from kvcluster.client.aio import AsyncClient
from kvcluster.datadir import DataDir, write_json_atomically
from kvcluster.errors import InvalidRequest, KVError
from kvcluster.process import log_to_file, pid_alive
from kvcluster.resp import connection, introspection, keyspace
from kvcluster.resp.commands import CommandTable
from kvcluster.resp.server import MAX_CONNECTIONS, GatewayServer
from kvcluster.resp.session import Shared

__all__ = [
    "READY_FILE",
    "GatewayConfig",
    "check_address",
    "command_table",
    "parse_address",
    "ready_address",
    "run_gateway",
    "serve",
]

log = logging.getLogger("kvcluster.resp")

READY_FILE: Final = "resp.ready"  # in DATA/run: {"pid", "address"} once the gateway listens
CLUSTER_WAIT: Final = 30.0  # seconds the gateway waits for the cluster before it listens anyway


@dataclass(frozen=True)
class GatewayConfig:
    data_dir: str
    address: str  # host:port, a loopback address
    max_connections: int = MAX_CONNECTIONS


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of `host:port` (IPv6 as `[::1]:port`); InvalidRequest unless the host
    is a loopback address: RESP travels in clear text and the gateway has no passwords."""
    if not isinstance(address, str) or ":" not in address:
        raise InvalidRequest(f"--resp takes host:port (e.g. 127.0.0.1:6380), not {address!r}")
    host, _, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidRequest(f"--resp port must be 1..65535, not {port_text!r}")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise InvalidRequest(
                f"--resp {address}: the RESP gateway binds loopback addresses only (127.0.0.1, ::1, localhost): "
                "RESP has no encryption and the gateway no passwords. Reach it from elsewhere through an "
                "SSH or TLS tunnel, or use the router (--listen, with CURVE keys)"
            )
    return host, int(port_text)


def check_address(address: str) -> str:
    """`address` if it is a loopback host:port free to bind now; InvalidRequest otherwise."""
    import socket

    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InvalidRequest(f"--resp {address}: cannot listen there: {exc.strerror or exc}") from None
    return address


def command_table() -> CommandTable:
    return CommandTable([*connection.COMMANDS, *keyspace.COMMANDS, *introspection.COMMANDS])


def ready_address(data_dir: str) -> str | None:
    """The address the cluster's gateway serves, from DATA/run/resp.ready, if the process
    that wrote it is the gateway running now (DATA/run/resp.pid, written by the coordinator)."""
    import json

    run = DataDir.at(data_dir).run
    try:
        with open(os.path.join(run, READY_FILE), encoding="utf-8") as f:
            ready = json.load(f)
        with open(os.path.join(run, "resp.pid"), encoding="ascii") as f:
            current = int(f.read().strip())
        pid, address = int(ready["pid"]), str(ready["address"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return address if pid == current and pid_alive(pid) else None


async def _cluster_client(data_dir: str) -> tuple[AsyncClient, dict[str, Any]]:
    """A client of the cluster, and its status once it is ready (or once CLUSTER_WAIT passed)."""
    client = await AsyncClient.connect(data_dir)
    deadline = time.monotonic() + CLUSTER_WAIT
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            stats = await client.stats()
            if stats.get("ready"):
                break
        except KVError as exc:
            log.info("waiting for the cluster: %s", exc)
        await asyncio.sleep(0.1)
    return client, stats


async def serve(config: GatewayConfig, stop: asyncio.Event) -> None:
    """Serve until `stop` is set."""
    host, port = parse_address(config.address)
    client, stats = await _cluster_client(config.data_dir)
    shared = Shared(
        client=client,
        address=config.address,
        data_dir=config.data_dir,
        table=command_table(),
        max_connections=config.max_connections,
        durability=str(stats.get("durability", "interval")),
    )
    server = GatewayServer(shared)
    ready = os.path.join(DataDir.at(config.data_dir).run, READY_FILE)
    try:
        await server.start(host, port)
        write_json_atomically(ready, {"pid": os.getpid(), "address": config.address})
        await stop.wait()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(ready)
        await server.close()
        await client.close()


def run_gateway(config: GatewayConfig) -> None:
    """Entry point of the gateway process (started by the coordinator, spawn method)."""
    log_to_file(config.data_dir, "resp")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the group; the coordinator stops us
        await serve(config, stop)

    try:
        asyncio.run(main())
    except Exception:
        log.exception("the RESP gateway failed")
        raise
