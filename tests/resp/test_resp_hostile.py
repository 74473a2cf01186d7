"""Hostile input: every bound holds, errors are answered as Redis answers them, and the
gateway keeps serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Iterator

import pytest
from kvtest.resp import Gateway, exchange

from kvcluster.client.aio import AsyncClient
from kvcluster.resp.gateway import command_table
from kvcluster.resp.protocol import MAX_ARRAY, MAX_INLINE
from kvcluster.resp.server import GatewayServer
from kvcluster.resp.session import Shared


@pytest.fixture
def sock(gateway: Gateway) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as connected:
        yield connected


def until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the gateway sends until it closes the connection."""
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"still open after {timeout} s; received {received[:200]!r}")


def still_serving(gateway: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as fresh:
        assert exchange(fresh, b"PING\r\n", b"\r\n") == b"+PONG\r\n"


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (b"*1\r\n$99999999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$-7\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*99999999999\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*%d\r\n" % (MAX_ARRAY + 1), b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*2\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"A" * (MAX_INLINE + 10), b"-ERR Protocol error: too big inline request\r\n"),
        (b"*" + b"9" * (MAX_INLINE + 10), b"-ERR Protocol error: too big mbulk count string\r\n"),
        (b'PING\r\nSET "unterminated\r\nPING\r\n', b"+PONG\r\n-ERR Protocol error: unbalanced quotes in request\r\n"),
    ],
    ids=[
        "huge-bulk",
        "negative-bulk",
        "huge-array",
        "array-over-limit",
        "not-bulk",
        "long-line",
        "long-count",
        "quotes",
    ],
)
def test_protocol_errors_are_answered_then_the_connection_closes(
    gateway: Gateway, sock: socket.socket, data: bytes, reply: bytes
) -> None:
    sock.sendall(data)
    assert until_closed(sock) == reply
    still_serving(gateway)


def test_negative_array_lengths_are_empty_requests(sock: socket.socket) -> None:
    assert exchange(sock, b"*-1\r\n*0\r\n*-100\r\nPING\r\n", b"\r\n") == b"+PONG\r\n"


def test_a_giant_array_header_then_nothing(gateway: Gateway, sock: socket.socket) -> None:
    sock.sendall(b"*%d\r\n$3\r\nSET\r\n" % MAX_ARRAY)  # allowed: nothing is allocated for it
    still_serving(gateway)
    sock.close()
    still_serving(gateway)


def test_binary_garbage(gateway: Gateway) -> None:
    draw = random.Random(5)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as garbage:
            garbage.sendall(draw.randbytes(draw.randint(1, 20_000)))
            garbage.shutdown(socket.SHUT_WR)
            replies = until_closed(garbage)
            assert not replies or replies.startswith((b"-", b"+")), replies[:100]
    still_serving(gateway)


def test_a_half_sent_request_then_close(gateway: Gateway) -> None:
    r = gateway.redis()
    r.delete("half")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as half:
        half.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$10\r\nonly")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as half:
        half.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$10\r\nonly")
        half.shutdown(socket.SHUT_WR)  # EOF mid-request: nothing to answer, the gateway closes
        assert until_closed(half) == b""
    assert r.get("half") is None
    r.close()


def test_many_pipelined_requests_without_reading_first(sock: socket.socket) -> None:
    count = 5000  # more than the requests the gateway takes in flight: reading pauses meanwhile
    replies = exchange(sock, b"".join(b"ECHO %d\r\n" % i for i in range(count)), b"$4\r\n4999\r\n", timeout=60)
    assert replies == b"".join(b"$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(count))


def test_a_thousand_connections_opened_and_closed(gateway: Gateway) -> None:
    r = gateway.redis()
    before = r.info("clients")["connected_clients"]
    opened = []
    for _ in range(1000):
        connection = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        connection.sendall(b"PING\r\n")
        opened.append(connection)
    for connection in opened:
        assert exchange(connection, b"", b"\r\n") == b"+PONG\r\n"
    assert r.info("clients")["connected_clients"] >= before + 1000
    for connection in opened:
        connection.close()
    deadline = time.monotonic() + 10
    while r.info("clients")["connected_clients"] > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert r.info("clients")["connected_clients"] == before
    r.close()


async def in_process_server(gateway: Gateway, **limits: int) -> tuple[GatewayServer, int]:
    """A gateway server run in this process, with limits of its own; its port."""
    client = await AsyncClient.connect(gateway.cluster.data_dir)
    max_connections = limits.pop("max_connections", 100)
    shared = Shared(client, "127.0.0.1:0", gateway.cluster.data_dir, command_table(), max_connections)
    server = GatewayServer(shared, **limits)
    await server.start("127.0.0.1", 0)
    return server, server.bound()[0][1]


async def stop_server(server: GatewayServer) -> None:
    await server.close()
    await server.shared.client.close()


def test_connections_over_the_limit_are_refused(gateway: Gateway) -> None:
    async def main() -> None:
        server, port = await in_process_server(gateway, max_connections=3)
        try:
            streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            answers = []
            for reader, writer in streams:
                writer.write(b"PING\r\n")
                answers.append(await asyncio.wait_for(reader.readline(), 10))
            assert answers == [b"+PONG\r\n"] * 3 + [b"-ERR max number of clients reached\r\n"]
            assert await asyncio.wait_for(streams[3][0].read(), 10) == b""  # closed
            assert server.shared.connections_refused == 1
            for _reader, writer in streams:
                writer.close()
        finally:
            await stop_server(server)

    asyncio.run(main())


def test_a_client_that_never_reads_its_replies_is_cut_off(gateway: Gateway) -> None:
    """Past `max_output` bytes of replies unread, the client is disconnected (as Redis's
    output buffer limit does); before that, reading pauses instead of buffering more."""
    value = b"v" * (256 << 10)
    gateway.redis().set("big", value)

    async def main() -> None:
        server, port = await in_process_server(gateway, max_output=4 << 20, max_pipeline=16)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
            writer.transport.set_write_buffer_limits(0)
            writer.write(b"GET big\r\n" * 200)  # 50 MiB of replies, none read yet
            deadline = time.monotonic() + 30
            while server.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert not server.connections  # cut off
            received = 0
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(1 << 20):
                    received += len(chunk)
            assert received < 40 * len(value)
            writer.close()
        finally:
            await stop_server(server)

    asyncio.run(main())
    gateway.redis().delete("big")
