"""The socket-free client core: what to send where, and what an answer means.

Every public operation becomes a `Call` — which peer gets it, the operation and its
arguments, and how to turn the reply's result into the caller's value. The sync and
asyncio clients only move the bytes; the validation, routing, encoding and decoding
they share live here, so both behave the same by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from kvcluster.codec import DATA_OPS, Op, Reply, encode_request
from kvcluster.errors import ClusterUnavailable, InvalidRequest, KeyNotFound, ValueTooLarge
from kvcluster.keys import encode_key, encode_namespace
from kvcluster.router.clustermap import ClusterMap
from kvcluster.router.jump import shard_for
from kvcluster.scope import Scope, checked_scope
from kvcluster.values import pack_value, unpack_value

__all__ = ["ADMIN", "READ_OPS", "RESIZE_TIMEOUT", "Call", "ClientCore", "ScanRoute", "StaleEpoch"]

ADMIN: Final = -1  # a Call's target: the coordinator (or the router, for a thin client)
READ_OPS: Final = frozenset(
    {Op.PING, Op.GET, Op.MGET, Op.EXISTS, Op.COUNT, Op.CLUSTER_MAP, Op.NS_LIST, Op.NS_STATS}
)  # safe to send again when a connection broke before the answer came
RESIZE_TIMEOUT: Final = 600.0  # seconds a resize may take, at least
ENVELOPE_SLACK: Final = 4096  # bytes a request needs beside its value
SCAN_PAGE: Final = 1000


class StaleEpoch(ClusterUnavailable):
    """The shard's cluster map is newer than the client's: refresh the map, then resend."""


class Call:
    """One request to make: its peer, its operation and arguments, and how to read the
    answer. (A plain class with slots: one is built per request.)"""

    __slots__ = ("args", "decode", "op", "target", "timeout")

    def __init__(
        self,
        target: int,
        op: Op,
        args: tuple[Any, ...],
        decode: Callable[[Any], Any],
        timeout: float | None = None,
    ) -> None:
        self.target = target  # a shard index, or ADMIN
        self.op = op
        self.args = args
        self.decode = decode
        self.timeout = timeout  # seconds; None: the client's timeout


def _same(result: Any) -> Any:
    return result


def _value_or_none(result: Any) -> Any:
    return None if result is None else unpack_value(result[0])


def _versioned(result: Any) -> tuple[Any, int] | None:
    return None if result is None else (unpack_value(result[0]), result[1])


class ScanRoute:
    """The shards a scan (or a count) visits, one after another, and what it skips when
    a resize changes the map on the way: the new shards hold keys moved from the old
    ones, and those from an old shard scanned before the change were returned already."""

    def __init__(self, core: ClientCore) -> None:
        self.core = core
        self.shards = core.map.shards  # the map the scan started with
        self.epoch = core.map.epoch
        self.completed: set[int] = set()  # old shards scanned whole under that map
        self.shard = 0

    def next(self) -> int | None:
        return self.shard if self.shard < self.core.map.shards else None

    def rows(self, ns: bytes, rows: list[tuple[str, Any, int]]) -> list[tuple[str, Any, int]]:
        if self.shard < self.shards or not self.completed:
            return rows
        return [row for row in rows if shard_for(ns, row[0].encode(), self.shards) not in self.completed]

    def done(self) -> None:
        if self.shard < self.shards and self.core.map.epoch == self.epoch:
            self.completed.add(self.shard)
        self.shard += 1


class ClientCore:
    """Routing and encoding for one client; holds no socket."""

    def __init__(self, cluster_map: ClusterMap, *, max_message: int) -> None:
        self.map = cluster_map
        self.max_value = max(1, max_message - ENVELOPE_SLACK)

    def encode(self, call: Call, seq: int) -> bytes:
        return encode_request(seq, self.map.epoch, call.op, *call.args)

    def interpret(self, reply: Reply, call: Call) -> Any:
        """The caller's value for a reply, or the error it carries, raised."""
        if reply.status != 0 and str(reply.result).startswith("stale_epoch"):
            raise StaleEpoch(str(reply.result))
        return call.decode(reply.unwrap())

    # -- data operations -----------------------------------------------------------

    def _target(self, ns: bytes, key: bytes) -> int:
        return self.map.shard_for(ns, key)

    def reroute(self, call: Call) -> None:
        """Route a single-key call again with the map now held (it was refreshed: a
        resize may have given the key to another shard)."""
        if call.op in DATA_OPS:
            call.target = self.map.shard_for(call.args[0], call.args[1])

    def pack(self, value: Any) -> bytes:
        """`value` packed for the wire; ValueTooLarge if no message could carry it."""
        packed = pack_value(value)
        if len(packed) > self.max_value:
            raise ValueTooLarge(f"value is {len(packed)} bytes packed; messages take at most {self.max_value}")
        return packed

    def set(self, ns: bytes, key: Any, value: Any, scope: Scope) -> Call:
        key_b = encode_key(key)
        scope = checked_scope(scope)
        return Call(self._target(ns, key_b), Op.SET, (ns, key_b, self.pack(value), int(scope)), _same)

    def get_versioned(self, ns: bytes, key: Any) -> Call:
        key_b = encode_key(key)
        return Call(self._target(ns, key_b), Op.GET, (ns, key_b), _versioned)

    def get(self, ns: bytes, key: Any, default: Any) -> Call:
        key_b = encode_key(key)
        decode = _value_or_none if default is None else (lambda r: default if r is None else unpack_value(r[0]))
        return Call(self._target(ns, key_b), Op.GET, (ns, key_b), decode)

    def get_item(self, ns: bytes, key: Any) -> Call:
        """`ns[key]`: like get, but a missing key is KeyNotFound (a KeyError)."""
        key_b = encode_key(key)

        def decode(result: Any) -> Any:
            if result is None:
                raise KeyNotFound(f"key {key!r} does not exist")
            return unpack_value(result[0])

        return Call(self._target(ns, key_b), Op.GET, (ns, key_b), decode)

    def update(self, ns: bytes, key: Any, value: Any) -> Call:
        key_b = encode_key(key)
        call_args = (ns, key_b, self.pack(value))
        return Call(self._target(ns, key_b), Op.UPDATE, call_args, lambda r: unpack_value(r[0]))

    def exists(self, ns: bytes, key: Any) -> Call:
        key_b = encode_key(key)
        return Call(self._target(ns, key_b), Op.EXISTS, (ns, key_b), bool)

    def consume(self, ns: bytes, key: Any) -> Call:
        key_b = encode_key(key)
        return Call(self._target(ns, key_b), Op.CONSUME, (ns, key_b), unpack_value)

    def delete(self, ns: bytes, key: Any) -> Call:
        key_b = encode_key(key)
        return Call(self._target(ns, key_b), Op.DELETE, (ns, key_b), bool)

    def delete_item(self, ns: bytes, key: Any) -> Call:
        """`del ns[key]`: a missing key is KeyNotFound (a KeyError)."""
        key_b = encode_key(key)

        def decode(existed: Any) -> None:
            if not existed:
                raise KeyNotFound(f"key {key!r} does not exist")

        return Call(self._target(ns, key_b), Op.DELETE, (ns, key_b), decode)

    def shards(self) -> range:
        """The targets of a request every shard must answer (count, scan)."""
        return range(self.map.shards)

    def count(self, ns: bytes, shard: int) -> Call:
        return Call(shard, Op.COUNT, (ns,), int)

    def scan(self, ns: bytes, shard: int, cursor: int | None, scope: Scope | None) -> Call:
        return Call(shard, Op.SCAN, (ns, cursor, SCAN_PAGE, None if scope is None else int(scope)), _same)

    @staticmethod
    def scan_page(result: Any) -> tuple[int | None, list[tuple[str, Any, int]]]:
        cursor, rows = result
        return cursor, [(key.decode(), unpack_value(value), ts) for key, value, ts in rows]

    # -- administration ------------------------------------------------------------

    @staticmethod
    def admin(op: Op, *args: Any, decode: Callable[[Any], Any] = _same) -> Call:
        return Call(ADMIN, op, args, decode)

    @staticmethod
    def resize(shards: Any, timeout: float) -> Call:
        """Grow the cluster to `shards` shards (the coordinator answers when it is done)."""
        if type(shards) is not int:
            raise InvalidRequest(f"shards must be an int, not {shards!r}")
        return Call(ADMIN, Op.RESIZE, (shards,), dict, timeout)

    @staticmethod
    def namespace_name(name: Any) -> bytes:
        return encode_namespace(name)
