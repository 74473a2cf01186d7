"""The sync client polls for an answer before sleeping only while answers come within
the polling window: a slow answer (durability `always`, a busy machine) turns polling
off for the next wait, and a prompt answer to a sleeping wait turns it back on."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from kvcluster.client import links
from kvcluster.client.links import StreamLink
from kvcluster.codec import Limits, encode_reply

HEADER = struct.Struct("<I")
SLOW = 0.02  # seconds the server takes for a slow answer: far beyond any polling window


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def polling(link: StreamLink) -> bool:
    return link._spinning


@pytest.mark.skipif(not links._SPIN, reason="one core: the client never polls")
def test_polling_stops_after_a_slow_answer_and_resumes_after_a_prompt_one(tmp_path: Path) -> None:
    path = str(tmp_path / "shard.stream")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    second_sent = threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(4096)
            time.sleep(SLOW)  # a slow disk, not synchronisation: the answer is late on purpose
            connection.sendall(frame(encode_reply(1, "slow")))
            connection.recv(4096)
            connection.sendall(frame(encode_reply(2, "prompt")))
            second_sent.set()
            connection.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    link = StreamLink(path, Limits(), timeout=5.0)
    try:
        assert polling(link)
        assert link.exchange(b"ask-1", 1, 5.0).result == "slow"
        assert not polling(link)  # the next wait sleeps at once
        link.send(b"ask-2", deadline=time.monotonic() + 5)
        assert second_sent.wait(5)  # the answer is in the socket before the wait starts
        assert link.receive(2, time.monotonic() + 5, 5.0).result == "prompt"
        assert polling(link)  # it came at once: polling pays again
    finally:
        link.close()
        server.close()
    thread.join(5)
