"""The synchronous client's two ways to reach a peer; both send a payload and return the
reply that carries the same sequence number, or raise `Timeout`.

`ZmqLink` is a DEALER socket (the coordinator, a router, any ZeroMQ endpoint);
`StreamLink` is the shard's local fast path, a Unix stream socket (actors/streams.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from typing import Any, Final

import zmq

from kvcluster.codec import Limits, Reply, decode_reply
from kvcluster.curve import ClientKeys
from kvcluster.errors import ClusterUnavailable, Timeout

__all__ = ["ConnectionLost", "StreamLink", "ZmqLink"]

_HEADER: Final = struct.Struct("<I")
_TIMEVAL: Final = struct.Struct("@ll")  # struct timeval, for SO_RCVTIMEO / SO_SNDTIMEO
_CONNECT_RETRY: Final = 0.02  # seconds between attempts while a shard (re)starts
_RECV_BUFFER: Final = 1 << 16
_SPIN: Final = (
    float(os.environ.get("KVCLUSTER_CLIENT_SPIN_US", "50")) * 1e-6 if (os.cpu_count() or 1) > 1 else 0.0
)  # one core: polling only delays the shard


class ConnectionLost(Timeout):
    """The connection broke after the request was sent: no answer will come, and the
    outcome is unknown (like any timeout). Reads are retried once on a new connection."""


class ZmqLink:
    """A DEALER socket; `target` (a router's routing tag: a shard number or `admin`) is
    sent in front of every request when the peer is a router."""

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        identity: bytes,
        limits: Limits,
        target: bytes | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        self.target = target
        self.limits = limits
        self.options = limits.unpack_options()
        self.socket: zmq.Socket[Any] = context.socket(zmq.DEALER)
        # Each socket into one router needs a routing id of its own: a ROUTER ignores a
        # second connection that claims an id already connected.
        self.socket.setsockopt(zmq.ROUTING_ID, identity + (b"/" + target if target else b""))
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, limits.max_message)
        if keys is not None:
            keys.apply(self.socket)
        self.socket.connect(endpoint)

    def exchange(self, payload: bytes, seq: int, timeout: float) -> Reply:
        deadline = time.monotonic() + timeout
        self.send(payload, deadline)
        return self.receive(seq, deadline, timeout)

    def send(self, payload: bytes, deadline: float) -> None:
        # ZeroMQ queues the request until the peer is there (and reconnects by itself).
        if self.target is None:
            self.socket.send(payload)
        else:
            self.socket.send_multipart([self.target, payload])

    def receive(self, seq: int, deadline: float, timeout: float) -> Reply:
        """The reply numbered `seq`; replies to earlier requests are dropped on the way."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.socket.poll(int(remaining * 1000) + 1):
                raise Timeout(f"no answer in {timeout:g} s")
            reply = decode_reply(self.socket.recv(), self.options)
            if reply.seq == seq:  # else a late answer to an earlier request that timed out
                return reply

    def close(self) -> None:
        self.socket.close(0)


class StreamLink:
    """A blocking Unix stream socket with kernel-side timeouts (SO_RCVTIMEO/SO_SNDTIMEO):
    one system call per send and usually one per reply, which is what makes it fast."""

    def __init__(self, path: str, limits: Limits, timeout: float) -> None:
        self.path = path
        self.limits = limits
        self.options = limits.unpack_options()
        self.timeout = timeout
        self.receive_timeout = timeout  # what SO_RCVTIMEO is set to now
        self.sock: socket.socket | None = None
        self._buffer = bytearray(_RECV_BUFFER)
        self._view = memoryview(self._buffer)
        self._kept = 0  # bytes of the next reply(s) read along with the last one
        self._spinning = bool(_SPIN)  # poll before sleeping (see _receive)

    def exchange(self, payload: bytes, seq: int, timeout: float) -> Reply:
        deadline = time.monotonic() + timeout
        self.send(payload, deadline)
        return self.receive(seq, deadline, timeout)

    def send(self, payload: bytes, deadline: float) -> None:
        frame = _HEADER.pack(len(payload)) + payload
        while True:
            sock = self.sock or self._connect(deadline)
            try:
                sock.sendall(frame)
                break
            except OSError:
                # A broken connection found while sending (the shard restarted): the shard
                # drops a partial frame, so nothing was applied. Reconnect and send again.
                self.close()
                if time.monotonic() >= deadline:
                    raise Timeout(f"could not send to {self.path} in time") from None

    def receive(self, seq: int, deadline: float, timeout: float) -> Reply:
        """The reply numbered `seq`; replies to earlier requests are dropped on the way."""
        sock = self.sock
        if sock is None:
            raise ConnectionLost(f"connection to {self.path} lost before the answer")
        if timeout != self.receive_timeout:  # a call with a deadline of its own
            self._set_timeouts(sock, timeout)
        while True:
            try:
                reply = decode_reply(self._read_frame(sock), self.options)
            except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO expired
                self.close()  # a late answer must not meet the next request
                raise Timeout(f"no answer in {timeout:g} s") from None
            except OSError as exc:
                self.close()
                raise ConnectionLost(f"connection to {self.path} lost: {exc}") from None
            if reply.seq == seq:
                return reply
            if time.monotonic() >= deadline:  # only late answers to old requests came
                self.close()
                raise Timeout(f"no answer in {timeout:g} s")

    def _connect(self, deadline: float) -> socket.socket:
        """Connect, retrying while the shard's socket is missing or refuses (a restart)."""
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if time.monotonic() + _CONNECT_RETRY >= deadline:
                    raise Timeout(f"{self.path} did not accept a connection: {exc}") from None
                time.sleep(_CONNECT_RETRY)
                continue
            except OSError as exc:
                sock.close()
                raise ClusterUnavailable(f"cannot connect to {self.path}: {exc}") from None
            self._set_timeouts(sock, self.timeout)
            self.sock = sock
            return sock

    def _set_timeouts(self, sock: socket.socket, timeout: float) -> None:
        interval = _TIMEVAL.pack(int(timeout), int(timeout % 1 * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)
        self.receive_timeout = timeout

    def _read_frame(self, sock: socket.socket) -> bytes:
        """The next reply frame. Replies to notices (sent without waiting) may come
        right behind one: what is read past a frame is kept for the next call."""
        view = self._view
        have, self._kept = self._kept, 0
        while have < _HEADER.size:
            have += self._receive(sock, view[have:])
        (length,) = _HEADER.unpack_from(view)
        if length > self.limits.max_message:
            raise OSError(f"a {length}-byte frame is over the message limit")
        end = _HEADER.size + length
        if end <= len(view):
            while have < end:
                have += self._receive(sock, view[have:])
            frame = bytes(view[_HEADER.size : end])
            if have > end:
                self._buffer[: have - end] = view[end:have]
                self._kept = have - end
            return frame
        body = bytearray(length)  # a large reply: read the rest straight into its own buffer
        part = have - _HEADER.size
        body[:part] = view[_HEADER.size : have]
        body_view = memoryview(body)
        while part < length:
            part += self._receive(sock, body_view[part:])
        return bytes(body)

    def _receive(self, sock: socket.socket, view: memoryview) -> int:
        # Poll for the answer a few tens of microseconds before sleeping in recv: it
        # usually arrives that soon, and waking a sleeping process costs more. Yield
        # between polls, so the shard (or anyone) that needs this core gets it. Only
        # while answers do come that soon: when one takes longer (durability `always`
        # waits for the disk; more busy processes than cores), polling is pure waste, so
        # the next wait sleeps at once — and measures whether polling would pay again.
        if self._spinning:
            deadline = time.perf_counter() + _SPIN
            while True:
                try:
                    received = sock.recv_into(view, 0, socket.MSG_DONTWAIT)
                    break
                except BlockingIOError:
                    if time.perf_counter() > deadline:
                        self._spinning = False
                        received = sock.recv_into(view)
                        break
                    os.sched_yield()
        else:
            started = time.perf_counter()
            received = sock.recv_into(view)
            self._spinning = bool(_SPIN) and time.perf_counter() - started < _SPIN
        if not received:
            raise ConnectionResetError("the shard closed the connection")
        return received

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
        self._kept = 0
