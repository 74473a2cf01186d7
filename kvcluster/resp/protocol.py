"""RESP, the Redis serialization protocol: an incremental request parser and the reply
encoders, for RESP2 and RESP3. Nothing here touches a socket.

A request is an array of bulk strings (`*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n`, what every
client library sends) or an inline command (`GET k\\r\\n`, what a person types into
telnet). Every length read from the wire is checked against a named limit before
anything is allocated for it; a request that breaks a rule raises `ProtocolError`,
whose text is the reply Redis gives (`Protocol error: ...`) before it closes the
connection.

Replies are built from plain Python values (see `encode`): `bytes` is a bulk string,
`Simple` a status line, `ErrorText` an error line, None the null reply, lists arrays
and dicts maps (flattened to arrays under RESP2).
"""

from __future__ import annotations

import math
from typing import Final, TypeAlias

from kvcluster.client.core import ENVELOPE_SLACK
from kvcluster.codec import DEFAULT_MAX_MESSAGE
from kvcluster.errors import InvalidRequest

__all__ = [
    "MAX_ARRAY",
    "MAX_BULK",
    "MAX_INLINE",
    "MAX_REQUEST",
    "ErrorText",
    "ProtocolError",
    "Reply",
    "RequestParser",
    "Simple",
    "encode",
    "encode_error",
    "split_inline",
]

MAX_BULK: Final = DEFAULT_MAX_MESSAGE - ENVELOPE_SLACK  # bytes of one argument: the cluster's largest value
MAX_ARRAY: Final = 1 << 20  # arguments of one request
MAX_INLINE: Final = 64 << 10  # bytes of an inline command, or of a `*`/`$` header line, before its newline
MAX_REQUEST: Final = 2 * DEFAULT_MAX_MESSAGE  # bytes of the arguments of one request, all together

_CRLF: Final = b"\r\n"


class ProtocolError(InvalidRequest):
    """The bytes are not a request: the connection gets this error and is closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Protocol error: {reason}")


class Simple(str):
    """A simple string reply: `+OK`."""

    __slots__ = ()


class ErrorText(str):
    """An error reply, code first: `ERR unknown command ...`, `WRONGTYPE ...`."""

    __slots__ = ()


Reply: TypeAlias = (
    "bool | int | float | bytes | str | list[Reply] | tuple[Reply, ...] | dict[str | bytes, Reply] | None"
)


def _decimal(line: bytes) -> int | None:
    """The integer a header line holds, read as Redis's string2ll does (no sign but '-', no
    spaces, no leading zeros, at most 19 digits), or None."""
    digits = line[1:] if line[:1] == b"-" else line
    if not digits.isdigit() or len(digits) > 19 or (digits[0] == 0x30 and len(digits) > 1):
        return None
    return int(line)


class RequestParser:
    """Bytes in (`feed`), requests out (`next`), across any split of the input.

    It keeps its place inside a request — the arguments read so far and the length of
    the one being read — so a large value arriving in many pieces is scanned once.
    """

    __slots__ = (
        "_args",
        "_buf",
        "_bulk",
        "_left",
        "_pos",
        "_size",
        "max_array",
        "max_bulk",
        "max_inline",
        "max_request",
    )

    def __init__(
        self,
        *,
        max_bulk: int = MAX_BULK,
        max_array: int = MAX_ARRAY,
        max_inline: int = MAX_INLINE,
        max_request: int = MAX_REQUEST,
    ) -> None:
        self.max_bulk = max_bulk
        self.max_array = max_array
        self.max_inline = max_inline
        self.max_request = max_request
        self._buf = bytearray()
        self._pos = 0  # where unread bytes begin in _buf
        self._args: list[bytes] | None = None  # the arguments of a multibulk request being read
        self._left = 0  # arguments of it still to come
        self._bulk = -1  # length of the argument being read; -1 when its `$` header is next
        self._size = 0  # bytes its arguments declared so far

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as part of a request."""
        return len(self._buf) - self._pos + sum(map(len, self._args or ()))

    @property
    def idle(self) -> bool:
        """Whether no request is partly read (a close now cuts nothing in half)."""
        return self._args is None and self._pos == len(self._buf)

    def next(self) -> list[bytes] | None:
        """The next complete request, or None until more bytes arrive.

        ProtocolError if the bytes break the protocol or a limit; the parser must not
        be used after that.
        """
        buf = self._buf
        while True:
            if self._args is None:
                if self._pos >= len(buf):
                    self._compact()
                    return None
                if buf[self._pos] == 0x2A:  # '*'
                    if not self._start_multibulk():
                        return None
                    if self._args is None:
                        continue  # `*0` or `*-1`: an empty request, skipped as Redis does
                else:
                    request = self._inline()
                    if request is None:
                        return None
                    if request:
                        return request
                    continue  # an empty line
            request = self._args
            if not self._read_bulks(request):
                self._compact()
                return None
            self._args = None
            return request

    def _line(self, what: str) -> bytes | None:
        """The header line at the read position (without CRLF), or None if incomplete."""
        buf = self._buf
        end = buf.find(_CRLF, self._pos)
        if end < 0:
            if len(buf) - self._pos > self.max_inline:
                raise ProtocolError(f"too big {what} string")
            return None
        line = bytes(buf[self._pos + 1 : end])
        self._pos = end + 2
        return line

    def _start_multibulk(self) -> bool:
        line = self._line("mbulk count")
        if line is None:
            return False
        count = _decimal(line)
        if count is None or count > self.max_array:
            raise ProtocolError("invalid multibulk length")
        if count > 0:
            self._args, self._left, self._bulk, self._size = [], count, -1, 0
        return True

    def _read_bulks(self, args: list[bytes]) -> bool:
        """Read arguments of the current request into `args`; True once all are in."""
        buf = self._buf
        while self._left:
            if self._bulk < 0:
                if self._pos >= len(buf):
                    return False
                if buf[self._pos] != 0x24:  # '$'
                    raise ProtocolError(f"expected '$', got {chr(buf[self._pos])!r}")
                line = self._line("bulk count")
                if line is None:
                    return False
                length = _decimal(line)
                if length is None or not 0 <= length <= self.max_bulk:
                    raise ProtocolError("invalid bulk length")
                self._size += length
                if self._size > self.max_request:
                    raise ProtocolError(f"request larger than {self.max_request} bytes")
                self._bulk = length
            start, end = self._pos, self._pos + self._bulk
            if len(buf) < end + 2:
                return False
            if buf[end : end + 2] != _CRLF:
                raise ProtocolError("bulk string not followed by CRLF")
            args.append(bytes(buf[start:end]))
            self._pos = end + 2
            self._bulk = -1
            self._left -= 1
        return True

    def _inline(self) -> list[bytes] | None:
        buf = self._buf
        end = buf.find(b"\n", self._pos)
        if end < 0:
            if len(buf) - self._pos > self.max_inline:
                raise ProtocolError("too big inline request")
            self._compact()
            return None
        if end - self._pos > self.max_inline:
            raise ProtocolError("too big inline request")
        line = bytes(buf[self._pos : end])
        self._pos = end + 1
        return split_inline(line[:-1] if line.endswith(b"\r") else line)

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]  # (bytearray drops a prefix without moving the rest)
            self._pos = 0


_ESCAPES: Final = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_SPACE: Final = frozenset(b" \t\n\r\x0b\x0c")
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


def split_inline(line: bytes) -> list[bytes]:
    """The arguments of an inline command, split as Redis's sdssplitargs does: blanks
    separate; "double quotes" take \\n \\r \\t \\b \\a \\xHH and \\<char> escapes; 'single
    quotes' take only \\'. A closing quote must end the argument. Redis splits the line
    as a C string: a NUL byte ends it."""
    line = line.split(b"\0", 1)[0]
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        quote = 0
        while True:
            c = line[i] if i < n else -1
            if quote == 0x22:  # inside "..."
                if c == -1:
                    raise ProtocolError("unbalanced quotes in request")
                if c == 0x5C and i + 3 < n and line[i + 1] == 0x78 and line[i + 2] in _HEX and line[i + 3] in _HEX:
                    current.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    current.append(_ESCAPES.get(line[i], line[i]))
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    current.append(c)
            elif quote == 0x27:  # inside '...'
                if c == -1:
                    raise ProtocolError("unbalanced quotes in request")
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    current.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    current.append(c)
            elif c in (-1, 0x20, 0x0A, 0x0D, 0x09):
                break
            elif c in (0x22, 0x27):
                quote = c
            else:
                current.append(c)
            i += 1
        args.append(bytes(current))


# -- replies ---------------------------------------------------------------------------

OK: Final = b"+OK\r\n"
_NULL: Final = {2: b"$-1\r\n", 3: b"_\r\n"}


def encode_error(text: str) -> bytes:
    """`-CODE message\\r\\n`, with any newline in the message turned into a space."""
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace") + _CRLF


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _double(value: float) -> bytes:
    if math.isnan(value):
        return b"nan"
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    return repr(value).encode()


def encode(value: Reply, protocol: int) -> bytes:
    """The bytes of a reply in RESP2 (`protocol` 2) or RESP3 (3)."""
    out: list[bytes] = []
    _encode_into(out, value, protocol)
    return out[0] if len(out) == 1 else b"".join(out)


def _encode_into(out: list[bytes], value: Reply, protocol: int) -> None:
    kind = type(value)
    if kind is bytes:
        out.append(_bulk(value))  # type: ignore[arg-type]
    elif value is None:
        out.append(_NULL[protocol])
    elif kind is Simple:
        out.append(b"+%b\r\n" % str(value).replace("\r", " ").replace("\n", " ").encode())
    elif kind is ErrorText:
        out.append(encode_error(str(value)))
    elif kind is bool:
        out.append((b"#t\r\n" if value else b"#f\r\n") if protocol == 3 else (b":1\r\n" if value else b":0\r\n"))
    elif isinstance(value, int):
        out.append(b":%d\r\n" % value)
    elif isinstance(value, float):
        out.append(b",%b\r\n" % _double(value) if protocol == 3 else _bulk(_double(value)))
    elif isinstance(value, str):
        out.append(_bulk(value.encode()))
    elif isinstance(value, list | tuple):
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(out, item, protocol)
    elif isinstance(value, dict):
        out.append(b"%%%d\r\n" % len(value) if protocol == 3 else b"*%d\r\n" % (2 * len(value)))
        for key, item in value.items():
            _encode_into(out, key, protocol)
            _encode_into(out, item, protocol)
    else:
        raise TypeError(f"no RESP form for {kind.__name__}")
