"""The asyncio client's links. Both keep many requests in flight: a reply resolves the
future filed under its sequence number, in whatever order replies come.

`AsyncStreamLink` speaks the shard's local fast path through an asyncio Protocol (no
StreamReader: one callback per chunk of bytes, however many replies it holds);
`AsyncZmqLink` is a zmq.asyncio DEALER socket for the coordinator or a router.
Deadlines are enforced by one sweep per link rather than a timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Final

import zmq
import zmq.asyncio

from kvcluster.client.links import ConnectionLost
from kvcluster.codec import Limits, Reply, decode_reply
from kvcluster.curve import ClientKeys
from kvcluster.errors import ClusterUnavailable, InvalidRequest, Timeout

__all__ = ["AsyncStreamLink", "AsyncZmqLink"]

_HEADER: Final = struct.Struct("<I")
_CONNECT_RETRY: Final = 0.02


class _Pending:
    """Futures by sequence number, with deadlines swept by one background task."""

    def __init__(self) -> None:
        self.futures: dict[int, tuple[asyncio.Future[Reply], float, float]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, seq: int, timeout: float) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.futures[seq] = (future, time.monotonic() + timeout, timeout)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return future

    def resolve(self, reply: Reply) -> None:
        entry = self.futures.pop(reply.seq, None)
        if entry is not None and not entry[0].done():  # else: late, its caller has timed out
            entry[0].set_result(reply)

    def fail_all(self, error: Exception) -> None:
        futures, self.futures = self.futures, {}
        for future, _deadline, _timeout in futures.values():
            if not future.done():
                future.set_exception(error)

    async def _sweep(self) -> None:
        while self.futures:
            now = time.monotonic()
            earliest = min(deadline for _f, deadline, _t in self.futures.values())
            await asyncio.sleep(max(0.001, min(earliest - now, 0.05)))
            now = time.monotonic()
            for seq, (future, deadline, timeout) in list(self.futures.items()):
                if deadline <= now:
                    del self.futures[seq]
                    if not future.done():
                        future.set_exception(Timeout(f"no answer in {timeout:g} s"))

    def cancel(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()


class _FrameProtocol(asyncio.Protocol):
    def __init__(self, link: AsyncStreamLink) -> None:
        self.link = link
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.outbox: list[bytes] = []  # frames to write at the end of this turn of the loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def queue(self, frame: bytes) -> None:
        """Write `frame` once this turn of the event loop is over, in one system call with
        every frame queued meanwhile (a burst of requests), in the order they were queued."""
        if not self.outbox:
            asyncio.get_running_loop().call_soon(self.flush)
        self.outbox.append(frame)

    def flush(self) -> None:
        frames, self.outbox = self.outbox, []
        transport = self.transport
        if frames and transport is not None and not transport.is_closing():
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start = 0
        link = self.link
        while len(buffer) - start >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buffer, start)
            if length > link.limits.max_message:
                link.lost(ConnectionLost(f"{link.path} sent a {length}-byte frame, over the limit"))
                return
            end = start + _HEADER.size + length
            if end > len(buffer):
                break
            try:
                reply = decode_reply(bytes(buffer[start + _HEADER.size : end]), link.options)
            except InvalidRequest as exc:
                link.lost(ConnectionLost(f"{link.path} sent an undecodable reply: {exc}"))
                return
            link.pending.resolve(reply)
            start = end
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.can_write.set()
        self.link.lost(ConnectionLost(f"connection to {self.link.path} lost: {exc or 'closed by the shard'}"))

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()


class AsyncStreamLink:
    def __init__(self, path: str, limits: Limits) -> None:
        self.path = path
        self.limits = limits
        self.options = limits.unpack_options()
        self.pending = _Pending()
        self.protocol: _FrameProtocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._queued = 0  # callers waiting for the connection (later callers queue behind them)

    async def exchange(self, payload: bytes, seq: int, timeout: float) -> Reply:
        """Send a request and await its reply. Requests reach the shard in the order
        their exchanges began: a caller that finds others waiting for the connection
        queues behind them, and a full socket buffer is waited out after the write."""
        protocol = self.protocol
        if protocol is None or self._queued:
            self._queued += 1
            protocol = await self._connect(time.monotonic() + timeout)
        future = self._send(protocol, payload, seq, timeout)
        if not protocol.can_write.is_set():  # the shard reads slower than we write
            await protocol.can_write.wait()
        return await future

    def send(self, payload: bytes, seq: int, timeout: float) -> asyncio.Future[Reply]:
        """Send a request in the order of the calls, and return the future of its reply:
        at once when the link is connected and nobody waits before it, else after those
        (its place in the queue is taken now). The frame is queued even when the socket's
        buffer is full: the caller bounds what it has in flight."""
        protocol = self.protocol
        if protocol is not None and not self._queued:
            return self._send(protocol, payload, seq, timeout)
        self._queued += 1
        return asyncio.get_running_loop().create_task(self._send_when_connected(payload, seq, timeout))

    async def _send_when_connected(self, payload: bytes, seq: int, timeout: float) -> Reply:
        protocol = await self._connect(time.monotonic() + timeout)
        return await self._send(protocol, payload, seq, timeout)

    def _send(self, protocol: _FrameProtocol, payload: bytes, seq: int, timeout: float) -> asyncio.Future[Reply]:
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise ConnectionLost(f"connection to {self.path} is closed")
        future = self.pending.add(seq, timeout)
        protocol.queue(_HEADER.pack(len(payload)) + payload)
        return future

    async def _connect(self, deadline: float) -> _FrameProtocol:
        """The connection, once the callers queued before this one have sent (the caller
        has counted itself in `_queued`; an asyncio.Lock serves its waiters in order)."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        try:
            async with self._connecting:
                return self.protocol or await self._open(deadline)
        finally:
            self._queued -= 1

    async def _open(self, deadline: float) -> _FrameProtocol:
        loop = asyncio.get_running_loop()
        while True:
            try:
                _transport, protocol = await loop.create_unix_connection(lambda: _FrameProtocol(self), self.path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if time.monotonic() + _CONNECT_RETRY >= deadline:
                    raise Timeout(f"{self.path} did not accept a connection: {exc}") from None
                await asyncio.sleep(_CONNECT_RETRY)
                continue
            except OSError as exc:
                raise ClusterUnavailable(f"cannot connect to {self.path}: {exc}") from None
            self.protocol = protocol
            return protocol

    def lost(self, error: Exception) -> None:
        """The connection broke: every request in flight on it fails; the next reconnects."""
        protocol, self.protocol = self.protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
        self.pending.fail_all(error)

    def close(self) -> None:
        self.pending.cancel()
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.abort()
        self.protocol = None


class AsyncZmqLink:
    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str,
        identity: bytes,
        limits: Limits,
        target: bytes | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        self.target = target  # a router's routing tag, sent in front of every request
        self.options = limits.unpack_options()
        self.socket: zmq.asyncio.Socket = context.socket(zmq.DEALER)
        # Each socket into one router needs a routing id of its own: a ROUTER ignores a
        # second connection that claims an id already connected.
        self.socket.setsockopt(zmq.ROUTING_ID, identity + (b"/" + target if target else b""))
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, limits.max_message)
        if keys is not None:
            keys.apply(self.socket)
        self.socket.connect(endpoint)
        self.pending = _Pending()
        self._reader: asyncio.Task[None] | None = None

    async def exchange(self, payload: bytes, seq: int, timeout: float) -> Reply:
        future = self.pending.add(seq, timeout)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())
        if self.target is None:
            await self.socket.send(payload)
        else:
            await self.socket.send_multipart([self.target, payload])
        return await future

    async def _read(self) -> None:
        while self.pending.futures:
            try:
                payload = await self.socket.recv()
            except zmq.ZMQError as exc:
                self.pending.fail_all(ClusterUnavailable(f"socket failed: {exc}"))
                return
            with contextlib.suppress(InvalidRequest):  # an undecodable message is dropped
                self.pending.resolve(decode_reply(payload, self.options))

    def close(self) -> None:
        self.pending.cancel()
        if self._reader is not None:
            self._reader.cancel()
        self.socket.close(0)
