"""Regression: a reply to a notice (a request sent without waiting for its answer, as
the commit of a cross-shard batch is) can arrive in the same read as the reply after
it. StreamLink refused that ("more than one frame for one request") and dropped the
connection; it now keeps the bytes for the next read."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

from kvcluster.client.links import StreamLink
from kvcluster.codec import Limits, encode_reply

HEADER = struct.Struct("<I")


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def test_two_replies_in_one_read_are_both_delivered(tmp_path: Path) -> None:
    path = str(tmp_path / "shard.stream")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            received = b""
            while received.count(b"ask") < 2:
                received += connection.recv(4096)
            # Both answers in one write: the client reads them in one recv.
            connection.sendall(frame(encode_reply(1, "notice")) + frame(encode_reply(2, "answer")))
            connection.recv(1)  # hold the connection open until the client is done

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    link = StreamLink(path, Limits(), timeout=5.0)
    try:
        link.send(b"ask", deadline=1e12)  # the notice: its answer is never waited for
        reply = link.exchange(b"ask", 2, 5.0)
        assert (reply.seq, reply.result) == (2, "answer")
        link.send(b"ask-3", deadline=1e12)
    finally:
        link.close()
        server.close()
    thread.join(5)


def test_a_reply_kept_from_the_last_read_is_returned_first(tmp_path: Path) -> None:
    path = str(tmp_path / "shard.stream")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(4096)
            connection.sendall(frame(encode_reply(1, "first")) + frame(encode_reply(2, "second")))
            connection.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    link = StreamLink(path, Limits(), timeout=5.0)
    try:
        assert link.exchange(b"ask", 1, 5.0).result == "first"
        assert link.receive(2, 1e12, 5.0).result == "second"  # already read: no recv needed
    finally:
        link.close()
        server.close()
    thread.join(5)
