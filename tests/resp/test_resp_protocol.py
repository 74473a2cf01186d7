"""The RESP request parser and reply encoders, on their own (no sockets)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcluster.resp.protocol import (
    MAX_ARRAY,
    MAX_BULK,
    MAX_INLINE,
    ErrorText,
    ProtocolError,
    Reply,
    RequestParser,
    Simple,
    encode,
    split_inline,
)


def request(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def parse_all(parser: RequestParser) -> list[list[bytes]]:
    found = []
    while (args := parser.next()) is not None:
        found.append(args)
    return found


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[list[bytes]]:
    parser = RequestParser()
    found: list[list[bytes]] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        parser.feed(data[start:cut])
        start = cut
        found += parse_all(parser)
    assert parser.idle
    return found


PIPELINE = (
    request(b"SET", b"key:1", b"a value\r\nwith CRLF inside")
    + request(b"GET", b"key:1")
    + b"PING\r\n"
    + request(b"MSET", b"", b"\x00\xff", b"k", b"v" * 300)
    + b"SET \"quoted key\" 'single'\n"
    + b"*0\r\n"
    + b"\r\n"
    + request(b"ECHO", b"x")
)
EXPECTED = [
    [b"SET", b"key:1", b"a value\r\nwith CRLF inside"],
    [b"GET", b"key:1"],
    [b"PING"],
    [b"MSET", b"", b"\x00\xff", b"k", b"v" * 300],
    [b"SET", b"quoted key", b"single"],
    [b"ECHO", b"x"],
]


def test_a_pipeline_parses_whole() -> None:
    assert feed_in_pieces(PIPELINE, []) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(PIPELINE)))
def test_a_pipeline_split_at_every_byte_parses_the_same(cut: int) -> None:
    assert feed_in_pieces(PIPELINE, [cut]) == EXPECTED


def test_a_pipeline_fed_one_byte_at_a_time_parses_the_same() -> None:
    assert feed_in_pieces(PIPELINE, list(range(1, len(PIPELINE)))) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=6), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_requests_cut_anywhere_come_back_whole(requests: list[list[bytes]], cuts: list[int]) -> None:
    data = b"".join(request(*args) for args in requests)
    assert feed_in_pieces(data, [c for c in cuts if c <= len(data)]) == requests


def test_a_large_value_in_many_pieces_is_read_once() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    data = request(b"SET", b"k", value)
    parser = RequestParser()
    for start in range(0, len(data), 1000):
        parser.feed(data[start : start + 1000])
        if start + 1000 < len(data):
            assert parser.next() is None
    assert parser.next() == [b"SET", b"k", value]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"*%d\r\n" % (MAX_ARRAY + 1), "invalid multibulk length"),
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*+1\r\n", "invalid multibulk length"),
        (b"*1\r\n$%d\r\n" % (MAX_BULK + 1), "invalid bulk length"),
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$99999999999999999999999\r\n", "invalid bulk length"),
        (b"*1\r\n$ 3\r\n", "invalid bulk length"),
        (b"*1\r\n:3\r\n", "expected '$', got ':'"),
        (b"*1\r\n$3\r\nabcXY", "bulk string not followed by CRLF"),
        (b"x" * (MAX_INLINE + 1), "too big inline request"),
        (b"*" + b"1" * (MAX_INLINE + 1), "too big mbulk count string"),
        (b"*1\r\n$" + b"1" * (MAX_INLINE + 1), "too big bulk count string"),
        (b'SET "open quote\r\n', "unbalanced quotes in request"),
        (b'SET "closed"x\r\n', "unbalanced quotes in request"),
    ],
)
def test_protocol_errors_name_what_is_wrong(data: bytes, reason: str) -> None:
    parser = RequestParser()
    parser.feed(data)
    with pytest.raises(ProtocolError, match="^" + re.escape(f"Protocol error: {reason}")):
        parser.next()


def test_a_request_larger_than_the_bound_is_refused_before_its_bytes_arrive() -> None:
    parser = RequestParser(max_bulk=100, max_request=250)
    parser.feed(b"*3\r\n$100\r\n" + b"a" * 100 + b"\r\n$100\r\n" + b"b" * 100 + b"\r\n$100\r\n")
    with pytest.raises(ProtocolError, match="request larger than 250 bytes"):
        parser.next()


def test_a_giant_array_header_allocates_nothing_and_waits() -> None:
    parser = RequestParser()
    parser.feed(b"*%d\r\n$1\r\na\r\n" % MAX_ARRAY)
    assert parser.next() is None
    assert parser.buffered < 100


def test_empty_requests_and_lines_are_skipped() -> None:
    parser = RequestParser()
    parser.feed(b"*0\r\n*-1\r\n\r\n\n   \r\nPING\r\n")
    assert parse_all(parser) == [[b"PING"]]


@pytest.mark.parametrize(
    ("line", "args"),
    [
        (b"GET k", [b"GET", b"k"]),
        (b"  SET   a\tb  ", [b"SET", b"a", b"b"]),
        (b'SET "a b" "\\x41\\n\\t\\"\\\\"', [b"SET", b"a b", b'A\n\t"\\']),
        (b"SET 'it\\'s' ''", [b"SET", b"it's", b""]),
        (b'ECHO "\\xzz"', [b"ECHO", b"xzz"]),
        (b"", []),
    ],
)
def test_inline_commands_split_as_redis_does(line: bytes, args: list[bytes]) -> None:
    assert split_inline(line) == args


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_any_bytes_end_in_requests_or_a_protocol_error(data: bytes, piece: int) -> None:
    """Garbage never hangs the parser nor raises anything but ProtocolError."""
    parser = RequestParser(max_inline=64, max_bulk=64)
    try:
        for start in range(0, len(data), piece):
            parser.feed(data[start : start + piece])
            for args in parse_all(parser):
                assert args and all(isinstance(a, bytes) for a in args)
    except ProtocolError:
        pass


def test_a_nul_byte_ends_an_inline_command_as_in_redis() -> None:
    assert split_inline(b"GET a\0 b c") == [b"GET", b"a"]
    assert split_inline(b"\0GET") == []
    with pytest.raises(ProtocolError, match="unbalanced quotes"):
        split_inline(b'GET "a\0"')


def test_replies_in_resp2_and_resp3() -> None:
    value: Reply = [b"bulk", 7, None, Simple("OK"), ErrorText("ERR no"), {"k": 1.5}, True, "text"]
    assert encode(value, 2) == (
        b"*8\r\n$4\r\nbulk\r\n:7\r\n$-1\r\n+OK\r\n-ERR no\r\n*2\r\n$1\r\nk\r\n$3\r\n1.5\r\n:1\r\n$4\r\ntext\r\n"
    )
    assert encode(value, 3) == (
        b"*8\r\n$4\r\nbulk\r\n:7\r\n_\r\n+OK\r\n-ERR no\r\n%1\r\n$1\r\nk\r\n,1.5\r\n#t\r\n$4\r\ntext\r\n"
    )
    assert encode(float("inf"), 3) == b",inf\r\n"
    assert encode(ErrorText("ERR two\r\nlines"), 2) == b"-ERR two  lines\r\n"
    with pytest.raises(TypeError):
        encode(object(), 2)  # type: ignore[arg-type]
