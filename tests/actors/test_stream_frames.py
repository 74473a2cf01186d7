"""The shard's stream server cuts the bytes of a connection into request frames however
they arrive: one whole frame (the fast path), several in one read, a frame split over
reads, and a frame over the limit (the connection is closed)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from kvcluster.actors.streams import StreamConnection, StreamServer

LIMIT = 1024


def frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[StreamServer, StreamConnection, socket.socket]]:
    server = StreamServer(str(tmp_path / "s.sock"), LIMIT, zmq.Poller())
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(server.path)
    client.settimeout(5)
    (connection,) = server.accept()
    connection.sock.settimeout(5)  # blocking reads: each read below sees what was sent
    yield server, connection, client
    client.close()
    server.shutdown()


def test_one_whole_frame(pair: tuple[StreamServer, StreamConnection, socket.socket]) -> None:
    server, connection, client = pair
    client.sendall(frame(b"one"))
    assert server.read(connection) == [b"one"]
    assert not connection.inbox


def test_several_frames_in_one_read(pair: tuple[StreamServer, StreamConnection, socket.socket]) -> None:
    server, connection, client = pair
    client.sendall(frame(b"a") + frame(b"bb") + frame(b"") + frame(b"ccc")[:3])
    assert server.read(connection) == [b"a", b"bb", b""]
    client.sendall(frame(b"ccc")[3:])
    assert server.read(connection) == [b"ccc"]
    assert not connection.inbox


def test_a_frame_split_over_reads(pair: tuple[StreamServer, StreamConnection, socket.socket]) -> None:
    server, connection, client = pair
    whole = frame(b"x" * 100)
    client.sendall(whole[:2])
    assert server.read(connection) == []
    client.sendall(whole[2:50])
    assert server.read(connection) == []
    client.sendall(whole[50:] + frame(b"next"))
    assert server.read(connection) == [b"x" * 100, b"next"]


def test_a_frame_over_the_limit_closes_the_connection(
    pair: tuple[StreamServer, StreamConnection, socket.socket],
) -> None:
    server, connection, client = pair
    client.sendall(struct.pack("<I", LIMIT + 1) + b"y" * 8)
    assert server.read(connection) == []
    assert connection.fileno() < 0 and connection not in server.connections.values()
