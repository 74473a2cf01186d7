"""The router process: one TCP address for clients that cannot reach the shards' local
sockets (another host, another container), started with `kvcluster start --listen`.

It forwards without decoding values. A client sends `[target, payload]`, where target
is a shard number (ASCII digits) or `admin`; the client routes with the cluster map
it fetched through here, so epochs are checked by the shards exactly as for local
clients. Replies travel back along the ZeroMQ envelope. Only client operations pass:
the commands the coordinator gives its shards, and SHUTDOWN, never do.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import zmq
from zmq.auth.thread import ThreadAuthenticator

from kvcluster import curve
from kvcluster.codec import Op, encode_error
from kvcluster.datadir import DataDir
from kvcluster.errors import InvalidRequest, KVError
from kvcluster.process import StopSignal, log_to_file

__all__ = ["ADMIN_TARGET", "ROUTER_ID", "RouterConfig", "run_router"]

log = logging.getLogger("kvcluster.router")

ROUTER_ID: Final = b"router"
ADMIN_TARGET: Final = b"admin"
_FORWARDED_ADMIN: Final = frozenset(
    {
        Op.PING,
        Op.CLUSTER_MAP,
        Op.NS_CREATE,
        Op.NS_UPDATE,
        Op.NS_DELETE,
        Op.NS_LIST,
        Op.NS_STATS,
        Op.CLUSTER_STATS,
        Op.ROTATE,
        Op.RESIZE,
        Op.TXN_DECIDE,
    }
)
_FORWARDED_DATA: Final = frozenset(
    {Op.PING, Op.GET, Op.SET, Op.UPDATE, Op.EXISTS, Op.CONSUME, Op.DELETE, Op.COUNT, Op.SCAN, Op.SHARD_STATS}
    | {Op.MGET, Op.MSET, Op.MDELETE, Op.MCONSUME, Op.ATOMIC, Op.TXN_PREPARE, Op.TXN_COMMIT, Op.TXN_ABORT}
)
_MAX_TARGET: Final = 8  # bytes of a target frame


@dataclass(frozen=True)
class RouterConfig:
    data_dir: str
    listen: str
    coordinator: str
    endpoints: tuple[str, ...]
    max_message: int
    curve: bool = False  # clients authenticate with CURVE keys from the allowlist (kvcluster.curve)


def peek(payload: bytes) -> tuple[int | None, int | None]:
    """(seq, op) of a request, read without decoding the rest of it (None: unreadable)."""
    unpacker = msgpack.Unpacker(max_buffer_size=len(payload) or 1, max_array_len=1 << 16, max_str_len=64)
    unpacker.feed(payload)
    try:
        if unpacker.read_array_header() < 4:
            return None, None
        unpacker.skip()  # the protocol version: the backend checks it
        seq = unpacker.unpack()
        unpacker.skip()  # the epoch: the shard checks it
        op = unpacker.unpack()
    except (ValueError, msgpack.OutOfData):
        return None, None
    return (seq if type(seq) is int else None), (op if type(op) is int else None)


class RouterProcess:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.context: zmq.Context[Any] = zmq.Context()
        self.frontend = self._socket(zmq.ROUTER)
        self.frontend.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.coordinator = self._socket(zmq.DEALER, config.coordinator)
        self.shards = [self._socket(zmq.DEALER, endpoint) for endpoint in config.endpoints]
        self.stopping = False
        self.poller = zmq.Poller()
        self.wakeup = StopSignal(self._stop)
        self.authenticator: ThreadAuthenticator | None = None
        self.allowlist_seen = -1.0  # mtime of the allowlist folder when last read
        if config.curve:
            self._start_curve()

    def _start_curve(self) -> None:
        """CURVE on the client side: the cluster's keys, and a ZAP handler (a thread of
        this process) that lets in only the public keys in the allowlist folder."""
        public, secret = curve.server_keys(self.config.data_dir)
        self.authenticator = ThreadAuthenticator(self.context)
        self.authenticator.start()
        self._read_allowlist()
        self.frontend.curve_secretkey = secret
        self.frontend.curve_publickey = public
        self.frontend.curve_server = True

    def _read_allowlist(self) -> None:
        """Read the allowed keys again when the folder changed (a key added or removed)."""
        folder = curve.allowed_dir(self.config.data_dir)
        try:
            changed = folder.stat().st_mtime
        except OSError:
            changed = 0.0
        if self.authenticator is not None and changed != self.allowlist_seen:
            self.allowlist_seen = changed
            self.authenticator.configure_curve(domain="*", location=str(folder))
            log.info("router: allowlist read from %s", folder)

    def _stop(self) -> None:
        self.stopping = True

    def _socket(self, kind: int, connect: str | None = None) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.context.socket(kind)
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message)
        sock.setsockopt(zmq.LINGER, 0)
        if connect is not None:
            sock.setsockopt(zmq.ROUTING_ID, ROUTER_ID)
            sock.connect(connect)
        return sock

    def run(self) -> None:
        self.frontend.bind(self.config.listen)
        log.info("router serving %s (pid %d)", self.config.listen, os.getpid())
        poller = self.poller
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.wakeup.fileno(), zmq.POLLIN)
        for backend in (self.coordinator, *self.shards):
            poller.register(backend, zmq.POLLIN)
        while not self.stopping:
            self._read_allowlist()
            for item, _events in poller.poll(1000):
                if item is self.frontend:
                    self._forward_requests()
                elif isinstance(item, zmq.Socket):
                    self._forward_replies(item)
                else:
                    self.wakeup.drain()
        if self.authenticator is not None:
            self.authenticator.stop()
        self.context.destroy(linger=0)

    def _forward_requests(self) -> None:
        while True:
            try:
                frames = self.frontend.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3 or len(frames[1]) > _MAX_TARGET:
                self._refuse(frames[0], None, "a router request is [target, payload]")
                continue
            client, target, payload = frames
            seq, op = peek(payload)
            if target.isdigit() and int(target) >= len(self.shards):
                self._grow()  # the cluster may have been resized since the router started
            if target == ADMIN_TARGET:
                backend, allowed = self.coordinator, _FORWARDED_ADMIN
            elif target.isdigit() and int(target) < len(self.shards):
                backend, allowed = self.shards[int(target)], _FORWARDED_DATA
            else:
                self._refuse(client, seq, f"unknown target {target!r}")
                continue
            if op not in allowed:
                self._refuse(client, seq, f"operation {op!r} is not served through the router")
                continue
            try:
                backend.send_multipart([client, payload], zmq.NOBLOCK)
            except zmq.Again:
                self._refuse(client, seq, "the cluster is not taking requests (its queue is full)")

    def _grow(self) -> None:
        """Connect to the shards a resize added (the manifest lists every shard)."""
        try:
            endpoints = DataDir.at(self.config.data_dir).read_manifest()["endpoints"]
        except KVError as exc:
            log.warning("cannot read the cluster map: %s", exc)
            return
        for endpoint in endpoints[len(self.shards) :]:
            socket = self._socket(zmq.DEALER, endpoint)
            self.shards.append(socket)
            self.poller.register(socket, zmq.POLLIN)

    def _forward_replies(self, backend: zmq.Socket[Any]) -> None:
        while True:
            try:
                frames = backend.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                continue
            with contextlib.suppress(zmq.ZMQError):  # the client is gone
                self.frontend.send_multipart(frames, zmq.NOBLOCK)

    def _refuse(self, client: bytes, seq: int | None, reason: str) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.frontend.send_multipart([client, encode_error(seq, InvalidRequest(reason))], zmq.NOBLOCK)


def run_router(config: RouterConfig) -> None:
    """Entry point of the router process (started by the coordinator, spawn method)."""
    log_to_file(config.data_dir, "router")
    RouterProcess(config).run()
