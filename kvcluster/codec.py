"""The wire codec: the one module that turns requests and replies into bytes and back.

Every message is one msgpack array that starts with the protocol version::

    request := [VERSION, seq, epoch, op, arg...]
    reply   := [VERSION, seq, status, result]    status: OK, or an error code string

`seq` is the sender's request number (replies are matched by it, never by order);
`epoch` is the cluster map the sender routed with: a shard refuses a key it was sent
under another epoch ("stale_epoch") rather than serve a key it may not own.
Namespaces and keys travel as msgpack `bin` (their UTF-8 bytes) and values as `bin`
holding their own msgpack, so a shard stores and returns them without decoding. No
pickle: only msgpack's plain types are accepted, with limits on every length (see
`Limits`). docs/wire-protocol.md lists every operation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from kvcluster.errors import InvalidRequest, KVError, error_for_code

__all__ = [
    "OK",
    "VERSION",
    "Limits",
    "Op",
    "Reply",
    "Request",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_reply",
    "encode_request",
]

VERSION: Final = 1
OK: Final = 0
DEFAULT_MAX_MESSAGE: Final = 64 << 20  # bytes: a value plus its envelope must fit


class Op(enum.IntEnum):
    """Operation codes. Data ops go to the shard owning the key; admin ops to the coordinator."""

    PING = 1
    GET = 2  # [ns, key] -> [value, ts] | nil
    SET = 3  # [ns, key, value, scope] -> ts
    UPDATE = 4  # [ns, key, value] -> [old value, ts]                KeyNotFound
    EXISTS = 5  # [ns, key] -> bool
    CONSUME = 6  # [ns, key] -> value                                 KeyNotFound
    DELETE = 7  # [ns, key] -> bool
    COUNT = 8  # [ns] -> int
    SCAN = 9  # [ns, cursor | nil, limit, scope | nil] -> [cursor | nil, [[key, value, ts], ...]]
    SHARD_STATS = 10  # [] -> {...}
    MGET = 11  # [ns, [key, ...]] -> [[value, ts] | nil, ...]
    MSET = 12  # [ns, [[key, value], ...], scope] -> {ts, errors}
    MDELETE = 13  # [ns, [key, ...]] -> {ts, errors}
    MCONSUME = 14  # [ns, [key, ...]] -> {ts, values, errors}
    ATOMIC = 15  # [ns, kind, items, scope] -> {ok, ts, values, errors}: all of it or none
    TXN_PREPARE = 16  # [ns, txn, deadline, kind, items, scope] -> {ok, ts, values, errors}
    TXN_COMMIT = 17  # [txn, ts] -> nil
    TXN_ABORT = 18  # [txn] -> nil

    CLUSTER_MAP = 32  # [] -> {...}
    NS_CREATE = 33  # [name, max_keys, max_value_bytes] -> nil
    NS_UPDATE = 34  # [name, max_keys | nil, max_value_bytes | nil] -> nil
    NS_DELETE = 35  # [name] -> nil
    NS_LIST = 36  # [] -> [name, ...]
    NS_STATS = 37  # [name] -> {...}
    CLUSTER_STATS = 38  # [] -> {...} (the object `kvcluster status --json` prints)
    ROTATE = 39  # [] -> nil
    SHUTDOWN = 40  # [] -> nil
    TXN_DECIDE = 41  # [txn, "commit" | "abort", ts, deadline, [shard, ...]] -> ["commit", ts] | ["abort"]
    TXN_FORGET = 42  # shard -> coordinator: [[txn, ...], shard] -> nil: it applied these commits
    RESIZE = 44  # [shards] -> {from, to, moved, seconds}: grow the cluster online
    SNAPSHOT = 48  # [path, namespace | nil] -> {path, cut, rows, size, seconds, fence_ms}
    LOADING = 49  # [path | nil, lease seconds] -> nil: a snapshot is being loaded (nil: done)
    AUTOSAVE_SET = 50  # [namespace | nil, interval s, pattern, keep] -> nil (interval 0: remove)
    AUTOSAVE_LIST = 51  # [] -> [{namespace, interval, pattern, keep, last}, ...]

    # between the coordinator and its shards
    HELLO = 64  # shard -> coordinator: [shard, pid, quota report]
    NS_SYNC = 65  # coordinator -> shard: [{name: [max_keys, max_value_bytes]}] -> quota report
    QUOTA_ASK = 66  # shard -> coordinator: [shard, ns, wanted, quota report] -> [granted, grant number]
    QUOTA_RELEASE = 67  # coordinator -> shard: [ns, shrink] -> quota report (the limit it keeps)
    NS_DROP = 68  # coordinator -> shard: [ns] -> nil
    STOP = 69  # coordinator -> shard: [] -> nil
    TXN_STATUS = 70  # shard -> coordinator: [txn, deadline] -> ["commit", ts] | ["abort"] | ["pending"]
    MOVE_START = 72  # coordinator -> old shard: [shards, epoch, {shard: endpoint}] -> {moved} once ready
    MOVE_SWITCH = 73  # coordinator -> shard: [epoch, shards] -> keys removed (those it gave away)
    MOVE_ABORT = 74  # coordinator -> shard: [] -> nil: the resize rolled back
    MOVE_INSTALL = 75  # old shard -> new shard: [[ns, key, value | nil, ts, scope], ...] -> rows changed
    SNAP_FENCE = 80  # coordinator -> shard: [snapshot id] -> last timestamp issued; writes wait
    SNAP_CUT = 81  # coordinator -> shard: [id, cut, [[txn, ts], ...], part path, namespace | nil] -> [rows, size]
    SNAP_ABORT = 82  # coordinator -> shard: [id] -> nil: writes go on, no part is written


DATA_OPS: Final = frozenset({Op.GET, Op.SET, Op.UPDATE, Op.EXISTS, Op.CONSUME, Op.DELETE})
_OPS: Final = {int(op): op for op in Op}  # a dict lookup is far cheaper than Op(code)


@dataclass(frozen=True)
class Limits:
    """Bounds on what a decoder accepts; anything larger is refused before it is built."""

    max_message: int = DEFAULT_MAX_MESSAGE
    max_array: int = 1 << 16
    max_map: int = 1 << 16
    max_str: int = 1 << 20

    def unpack_options(self) -> dict[str, Any]:
        return {
            "raw": False,
            "strict_map_key": True,
            "max_bin_len": self.max_message,
            "max_str_len": self.max_str,
            "max_array_len": self.max_array,
            "max_map_len": self.max_map,
            "max_ext_len": 0,
        }


class Request:
    """A decoded request. (A plain class: one is built per request, and this is cheapest.)"""

    __slots__ = ("args", "epoch", "op", "seq")

    def __init__(self, seq: int, epoch: int, op: Op, args: list[Any]) -> None:
        self.seq = seq
        self.epoch = epoch
        self.op = op
        self.args = args

    def __repr__(self) -> str:
        return f"Request(seq={self.seq}, epoch={self.epoch}, op={self.op.name}, args={self.args!r:.200})"


class Reply:
    """A decoded reply. (A plain class with slots: one is built per request.)"""

    __slots__ = ("result", "seq", "status")

    def __init__(self, seq: int, status: int | str, result: Any) -> None:
        self.seq = seq
        self.status = status
        self.result = result

    def __repr__(self) -> str:
        return f"Reply(seq={self.seq}, status={self.status!r}, result={self.result!r:.200})"

    def unwrap(self) -> Any:
        """The result, or the peer's error raised as its KVError."""
        if self.status == OK:
            return self.result
        raise error_for_code(str(self.status), str(self.result))


# For the types used here, pack() runs in C under the GIL without Python callbacks
# and resets itself after an error, so one Packer serves every thread.
_PACKER = msgpack.Packer(use_bin_type=True, datetime=False, autoreset=True)
_pack = _PACKER.pack


def encode_request(seq: int, epoch: int, op: int, *args: Any) -> bytes:
    return _pack([VERSION, seq, epoch, op, *args])  # type: ignore[no-any-return]


def encode_reply(seq: int, result: Any) -> bytes:
    return _pack([VERSION, seq, OK, result])  # type: ignore[no-any-return]


def encode_error(seq: int | None, error: KVError) -> bytes:
    return _pack([VERSION, seq, error.code, str(error)])  # type: ignore[no-any-return]


_DEFAULT_OPTIONS: Final = Limits().unpack_options()


def _unpack(payload: bytes, options: dict[str, Any], what: str) -> list[Any]:
    try:
        message = msgpack.unpackb(payload, **options)
    except (ValueError, TypeError) as exc:  # every msgpack decoding error is a ValueError
        raise InvalidRequest(f"undecodable {what}: {exc}") from None
    if type(message) is not list or len(message) < 4:
        raise InvalidRequest(f"a {what} is an array of at least 4 items")
    if message[0] != VERSION:
        raise InvalidRequest(f"protocol version {message[0]!r}; this kvcluster speaks {VERSION}")
    return message


def decode_request(payload: bytes, options: dict[str, Any] = _DEFAULT_OPTIONS) -> Request:
    """Parse a request; InvalidRequest for anything malformed (the caller replies with it)."""
    message = _unpack(payload, options, "request")
    _version, seq, epoch, op, *args = message
    if type(seq) is not int or type(epoch) is not int:
        raise InvalidRequest("seq and epoch are integers")
    known = _OPS.get(op) if type(op) is int else None
    if known is None:
        raise InvalidRequest(f"unknown operation {op!r}")
    return Request(seq, epoch, known, args)


def request_seq(payload: bytes) -> int | None:
    """Best-effort seq of a request that failed to decode, so its error can be matched."""
    try:
        message = msgpack.unpackb(payload, **_DEFAULT_OPTIONS)
    except (ValueError, TypeError):
        return None
    if type(message) is list and len(message) > 1 and type(message[1]) is int:
        return message[1]
    return None


def decode_reply(payload: bytes, options: dict[str, Any] = _DEFAULT_OPTIONS) -> Reply:
    message = _unpack(payload, options, "reply")
    _version, seq, status, result = message[:4]
    if type(seq) is not int and seq is not None:
        raise InvalidRequest("a reply's seq is an integer")
    return Reply(seq if seq is not None else -1, status, result)
