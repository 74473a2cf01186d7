"""Hostile frames sent straight to a shard, over ZeroMQ and over its Unix stream: each
gets an error reply (an oversized one, a dropped connection), the shard never dies,
and the next valid request succeeds."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from kvcluster import Client
from kvcluster.codec import VERSION, Op, decode_reply, encode_request

pytestmark = pytest.mark.slow

HOSTILE: list[bytes] = [
    b"",
    b"garbage \x00\xff\xfe",
    msgpack.packb([VERSION, 1, 1, int(Op.GET), b"default"])[:-3],  # truncated
    b"\xdd\xff\xff\xff\xff",  # an array that claims 2**32 - 1 elements
    b"\xdf\xff\xff\xff\xff",  # a map that claims as many pairs
    b"\xc6\xff\xff\xff\xf0" + b"x" * 10,  # a bin that claims ~4 GiB
    b"\x91" * 5000 + b"\xc0",  # nesting 5000 deep
    msgpack.packb({"not": "an array"}),
    msgpack.packb([VERSION, 1]),
    msgpack.packb([99, 1, 1, int(Op.GET), b"default", b"k"]),  # unknown protocol version
    msgpack.packb([VERSION, "seq", 1, int(Op.GET), b"default", b"k"]),
    msgpack.packb([VERSION, 1, 1, 9999, b"default", b"k"]),  # unknown operation
    msgpack.packb([VERSION, 1, 1, int(Op.GET), 17, b"k"]),  # namespace of the wrong type
    msgpack.packb([VERSION, 1, 1, int(Op.GET), b"default", b"k" * 5000]),  # key too long
    msgpack.packb([VERSION, 1, 1, int(Op.SET), b"default", b"k", "not bytes", 1]),
    msgpack.packb([VERSION, 1, 1, int(Op.SET), b"default", b"k", b"\xc1", 1]),  # not msgpack
    msgpack.packb([VERSION, 1, 1, int(Op.SET), b"default", b"k", b"\x01\x02", 1]),  # two objects
    msgpack.packb([VERSION, 1, 1, int(Op.SET), b"default", b"k", b"\x01", 7]),  # unknown scope
    # unhashable scopes: found by the fuzzer, each killed the shard (TypeError in a lookup)
    msgpack.packb([VERSION, 1, 1, int(Op.SET), b"default", b"k", b"\x01", {}]),
    msgpack.packb([VERSION, 1, 1, int(Op.SCAN), b"default", None, 10, [1]]),
    msgpack.packb([VERSION, 1, 1, int(Op.MSET), b"default", [[b"k", b"\x01"]], {}]),
    msgpack.packb([VERSION, 1, 1, int(Op.ATOMIC), b"default", [["delete"]], [b"k"], 1]),  # unhashable kind
    msgpack.packb([VERSION, 1, 1, int(Op.SCAN), b"default", "cursor", 10, None]),
    msgpack.packb([VERSION, 1, 1, int(Op.SCAN), b"default", None, 10**9, None]),
    msgpack.packb([VERSION, 1, 1, int(Op.STOP)]),  # a coordinator-only command
    msgpack.packb([VERSION, 1, 1, int(Op.NS_DROP), "default"]),
    # batches and two-phase commit
    msgpack.packb([VERSION, 1, 1, int(Op.MSET), b"default", "not a list", 1]),
    msgpack.packb([VERSION, 1, 1, int(Op.MSET), b"default", [[b"k", b"\x01", b"extra"]], 1]),
    msgpack.packb([VERSION, 1, 1, int(Op.MSET), b"default", [[b"k", b"\x01"], [b"k", b"\x02"]], 1]),  # twice
    msgpack.packb([VERSION, 1, 1, int(Op.MSET), b"default", [[b"k", b"\x01"]], 7]),  # unknown scope
    msgpack.packb([VERSION, 1, 1, int(Op.MGET), b"default", [b"k", "text"]]),
    msgpack.packb([VERSION, 1, 1, int(Op.MGET), b"default", []]),
    msgpack.packb([VERSION, 1, 1, int(Op.MDELETE), b"default", [b""]]),
    msgpack.packb([VERSION, 1, 1, int(Op.MCONSUME), b"default", {b"k": 1}]),
    msgpack.packb([VERSION, 1, 1, int(Op.ATOMIC), b"default", "drop", [b"k"], 1]),
    msgpack.packb([VERSION, 1, 1, int(Op.ATOMIC), b"default", "set", [b"k"], 1]),
    msgpack.packb([VERSION, 1, 1, int(Op.TXN_PREPARE), b"default", b"t" * 100, 2**62, "set", [[b"k", b"\x01"]], 1]),
    msgpack.packb([VERSION, 1, 1, int(Op.TXN_PREPARE), b"default", b"t", "soon", "set", [[b"k", b"\x01"]], 1]),
    msgpack.packb([VERSION, 1, 1, int(Op.TXN_PREPARE), b"default", b"t", 1, "set", [[b"k", b"\x01"]], 1]),  # past
    msgpack.packb([VERSION, 1, 1, int(Op.TXN_COMMIT), "txn", 5]),
    msgpack.packb([VERSION, 1, 1, int(Op.TXN_COMMIT), b"txn", "ts"]),
    msgpack.packb([VERSION, 1, 1, int(Op.TXN_ABORT)]),
    msgpack.packb([VERSION, 1, 1, int(Op.TXN_STATUS), b"txn", 1]),  # coordinator-side only
]


@pytest.fixture
def shard_target(client: Client) -> tuple[str, str, int]:
    return client.core.map.endpoints[0], client.core.map.streams[0], client.core.map.epoch


@pytest.fixture
def dealer(shard_target: tuple[str, str, int]) -> Iterator[zmq.Socket[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(shard_target[0])
    yield sock
    context.destroy(linger=0)


def valid_get(epoch: int, seq: int = 12345) -> bytes:
    return encode_request(seq, epoch, Op.GET, b"default", b"hostile-check")


@pytest.mark.parametrize("payload", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_payload_over_zeromq(
    dealer: zmq.Socket[Any], shard_target: tuple[str, str, int], payload: bytes
) -> None:
    dealer.send(payload)
    reply = decode_reply(dealer.recv())
    assert reply.status != 0
    dealer.send(valid_get(shard_target[2]))
    assert decode_reply(dealer.recv()).status == 0


def test_extra_zeromq_frames_are_refused(dealer: zmq.Socket[Any], shard_target: tuple[str, str, int]) -> None:
    for frames in ([b"a", b"b", b"c", b"d", b"e", valid_get(shard_target[2])], [b"x"] * 9):
        dealer.send_multipart(frames)
        assert decode_reply(dealer.recv_multipart()[-1]).status != 0
    dealer.send(valid_get(shard_target[2]))
    assert decode_reply(dealer.recv()).status == 0


def test_oversized_zeromq_message_drops_the_connection_only(
    dealer: zmq.Socket[Any], shard_target: tuple[str, str, int], client: Client
) -> None:
    dealer.send(b"x" * (65 << 20))  # over MAXMSGSIZE: ZeroMQ drops this peer
    assert client.namespace("default").get("hostile-check") is None  # the shard still serves


def stream_exchange(path: str, raw: bytes) -> bytes | None:
    """Send raw bytes; return the first reply frame, or None if the shard closed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(raw)
        header = sock.recv(4)
        if len(header) < 4:
            return None
        (length,) = struct.unpack("<I", header)
        body = b""
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                return None
            body += chunk
        return body


@pytest.mark.parametrize("payload", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_payload_over_the_stream(shard_target: tuple[str, str, int], payload: bytes) -> None:
    path, epoch = shard_target[1], shard_target[2]
    reply = stream_exchange(path, struct.pack("<I", len(payload)) + payload)
    assert reply is not None
    assert decode_reply(reply).status != 0
    valid = valid_get(epoch)
    assert decode_reply(stream_exchange(path, struct.pack("<I", len(valid)) + valid) or b"").status == 0


def test_a_frame_longer_than_the_limit_closes_the_stream(shard_target: tuple[str, str, int]) -> None:
    path, epoch = shard_target[1], shard_target[2]
    assert stream_exchange(path, struct.pack("<I", 0xFFFFFFF0) + b"x" * 100) is None
    valid = valid_get(epoch)
    assert decode_reply(stream_exchange(path, struct.pack("<I", len(valid)) + valid) or b"").status == 0


def test_a_stale_epoch_is_refused_not_served(dealer: zmq.Socket[Any], shard_target: tuple[str, str, int]) -> None:
    dealer.send(encode_request(1, shard_target[2] + 5, Op.SET, b"default", b"k", b"\x01", 1))
    reply = decode_reply(dealer.recv())
    assert reply.status == "cluster_unavailable"
    assert str(reply.result).startswith("stale_epoch")


def test_a_batch_value_that_is_not_msgpack_is_refused_for_its_key(
    dealer: zmq.Socket[Any], shard_target: tuple[str, str, int]
) -> None:
    epoch = shard_target[2]
    dealer.send(encode_request(7, epoch, Op.MSET, b"default", [[b"bad", b"\xc1"], [b"two", b"\x01\x02"]], 1))
    reply = decode_reply(dealer.recv())
    assert reply.status == 0 and reply.result["ts"] is None  # nothing applied
    assert {key: error[0] for key, error in reply.result["errors"].items()} == {
        b"bad": "invalid_request",
        b"two": "invalid_request",
    }
    dealer.send(encode_request(8, epoch, Op.MGET, b"default", [b"bad", b"two"]))
    assert decode_reply(dealer.recv()).result[1] == [None, None]


def test_a_write_delivered_twice_over_zeromq_is_applied_once(
    dealer: zmq.Socket[Any], shard_target: tuple[str, str, int], client: Client
) -> None:
    """A ZeroMQ peer that sends a write again (its own retry) gets the first answer back;
    the second value is never written."""
    epoch = shard_target[2]
    key = next(f"dedup-{i}" for i in range(1000) if client.core.map.shard_for(b"default", f"dedup-{i}".encode()) == 0)
    dealer.send(encode_request(41, epoch, Op.SET, b"default", key.encode(), b"\x01", 1))
    first = decode_reply(dealer.recv())
    dealer.send(encode_request(41, epoch, Op.SET, b"default", key.encode(), b"\x02", 1))
    again = decode_reply(dealer.recv())
    assert first.status == 0 and again.result == first.result  # the same timestamp
    assert client.namespace("default").get(key) == 1


def test_a_stream_applies_every_request_even_with_a_repeated_seq(shard_target: tuple[str, str, int]) -> None:
    """A stream never re-delivers (a client whose connection broke sends again on a new
    one), so the shard keeps no dedup record for it: the same seq twice on one
    connection is two writes."""
    _endpoint, path, epoch = shard_target
    answers = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        for value in (b"\x01", b"\x02"):
            payload = encode_request(41, epoch, Op.SET, b"default", b"stream-seq", value, 1)
            sock.sendall(struct.pack("<I", len(payload)) + payload)
            (length,) = struct.unpack("<I", sock.recv(4, socket.MSG_WAITALL))
            answers.append(decode_reply(sock.recv(length, socket.MSG_WAITALL)))
    assert answers[0].status == 0 and answers[1].status == 0
    assert answers[1].result > answers[0].result


def test_a_commit_with_an_impossible_timestamp_is_refused(
    dealer: zmq.Socket[Any], shard_target: tuple[str, str, int], client: Client
) -> None:
    """Found by fuzzing: a TXN_COMMIT of a prepared transaction with a negative
    timestamp failed to pack its journal record (struct.error) and killed the shard."""
    epoch = shard_target[2]
    key = next(f"evil-{i}" for i in range(1000) if client.core.map.shard_for(b"default", f"evil-{i}".encode()) == 0)
    deadline = (time.time_ns() // 1000) + 60_000_000
    dealer.send(
        encode_request(
            61, epoch, Op.TXN_PREPARE, b"default", b"evil-txn", deadline, "set", [[key.encode(), b"\x01"]], 1
        )
    )
    assert decode_reply(dealer.recv()).status == 0
    for ts in (-(2**62), 0, 2**64 - 1):
        dealer.send(encode_request(62, epoch, Op.TXN_COMMIT, b"evil-txn", ts))
        assert decode_reply(dealer.recv()).status == "invalid_request"
    dealer.send(encode_request(63, epoch, Op.TXN_ABORT, b"evil-txn"))
    assert decode_reply(dealer.recv()).status == 0
    assert client.namespace("default").get(key) is None  # the shard serves, and nothing was applied
