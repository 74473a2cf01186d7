"""The gateway's state: what all connections share (`Shared`: the cluster client, the
namespace proxies, counters) and what each one has (`Session`: protocol version,
selected namespace, name, SCAN cursors). Command handlers see both through a `Context`.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from kvcluster.client.aio import AsyncClient, AsyncNamespace

if TYPE_CHECKING:
    from kvcluster.resp.commands import CommandTable

__all__ = ["CURSOR_TTL", "DEFAULT_NAMESPACE", "MAX_CURSORS", "Context", "Cursors", "Session", "Shared"]

DEFAULT_NAMESPACE: Final = "default"  # SELECT 0
MAX_CURSORS: Final = 16  # SCAN cursors one connection keeps open; the oldest goes first
CURSOR_TTL: Final = 300.0  # seconds an unused SCAN cursor is kept


@dataclass
class OpenScan:
    keys: AsyncIterator[tuple[str, Any]]
    namespace: str
    used: float


class Cursors:
    """A connection's open SCAN cursors: numbered, bounded, expiring.

    A cursor is taken out while its SCAN runs and comes back under a new number, so
    two SCANs sent at once with the same cursor cannot share an iterator.
    """

    def __init__(self, limit: int = MAX_CURSORS, ttl: float = CURSOR_TTL) -> None:
        self.limit = limit
        self.ttl = ttl
        self._open: dict[int, OpenScan] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._open)

    def take(self, cursor: int, namespace: str) -> AsyncIterator[tuple[str, Any]] | None:
        """The scan cursor `cursor` continues (None if unknown, expired, or of another namespace)."""
        self._expire()
        scan = self._open.pop(cursor, None)
        if scan is None or scan.namespace != namespace:
            return None
        return scan.keys

    def keep(self, keys: AsyncIterator[tuple[str, Any]], namespace: str) -> int:
        """Open a cursor for a scan that has more to give; its number (never 0)."""
        self._expire()
        while len(self._open) >= self.limit:
            del self._open[next(iter(self._open))]  # the oldest
        self._next += 1
        self._open[self._next] = OpenScan(keys, namespace, time.monotonic())
        return self._next

    def _expire(self) -> None:
        horizon = time.monotonic() - self.ttl
        for cursor in [c for c, scan in self._open.items() if scan.used < horizon]:
            del self._open[cursor]


@dataclass
class Session:
    """One connection's state."""

    id: int
    address: str
    namespace: AsyncNamespace
    protocol: int = 2
    name: bytes | None = None
    library: dict[str, bytes] = field(default_factory=dict)  # CLIENT SETINFO LIB-NAME / LIB-VER
    cursors: Cursors = field(default_factory=Cursors)
    created: float = field(default_factory=time.monotonic)
    closing: bool = False  # QUIT (or a protocol error): reply, then close


@dataclass
class Shared:
    """What every connection of one gateway shares."""

    client: AsyncClient
    address: str  # host:port served
    data_dir: str
    table: CommandTable
    max_connections: int
    durability: str = "interval"  # the cluster's, as CONFIG GET appendfsync reports it
    namespaces: dict[str, AsyncNamespace] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    sessions: dict[int, Session] = field(default_factory=dict)
    connections_total: int = 0
    connections_refused: int = 0
    commands_total: int = 0
    errors_total: int = 0
    pid: int = field(default_factory=os.getpid)

    def proxy(self, name: str) -> AsyncNamespace:
        """The proxy of namespace `name` (one per name; the names are the cluster's few)."""
        namespace = self.namespaces.get(name)
        if namespace is None:
            if len(self.namespaces) >= 4096:
                self.namespaces.clear()
            namespace = self.namespaces[name] = AsyncNamespace(self.client, name)
        return namespace


class Context(NamedTuple):  # (a tuple: one is made per request, and cheaply)
    """What a command handler sees: the shared state, its connection, and the namespace
    and protocol in force when the request was read (later SELECTs do not change them)."""

    shared: Shared
    session: Session
    namespace: AsyncNamespace
    protocol: int
