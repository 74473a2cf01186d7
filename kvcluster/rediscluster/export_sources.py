"""What `kvcluster export` reads (migrate.py): a running kvcluster, through the normal
client, or a snapshot file, through its reader. Both give rows — (namespace, key,
msgpack value bytes, timestamp) — of permanent keys only, page by page, the value
bytes exactly as the source holds them (never unpacked).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

from kvcluster.client.core import ScanRoute
from kvcluster.client.sync import Client
from kvcluster.errors import InvalidRequest
from kvcluster.rediscluster.layout import Limits
from kvcluster.scope import Scope
from kvcluster.snapshot import open_snapshot

__all__ = ["ClusterSource", "Row", "SnapshotSource", "Source"]

Row = tuple[str, bytes, bytes, int]  # namespace, key (UTF-8), packed value, timestamp (µs)


class Source:
    """The interface migrate.export reads through."""

    description = ""

    def namespaces(self) -> dict[str, Limits]:
        """Every namespace of the source, with its limits."""
        raise NotImplementedError

    def expected(self, names: list[str]) -> dict[str, int | None]:
        """Keys each namespace is expected to hold (all scopes), for a progress bar."""
        raise NotImplementedError

    def rows(self, names: list[str]) -> Iterator[Row]:
        """The permanent keys of those namespaces, streamed."""
        raise NotImplementedError

    def ephemeral(self, name: str) -> int:
        """How many ephemeral keys the namespace holds (they are not exported)."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of what the source holds open."""


class ClusterSource(Source):
    """A running kvcluster, read through `client` shard by shard in scan pages."""

    def __init__(self, client: Client, *, owned: bool = False) -> None:
        if not isinstance(client, Client):
            raise InvalidRequest(f"an export reads a local kvcluster's Client, not {client!r}")
        self.client = client
        self.owned = owned
        self.description = f"kvcluster at {client.target.address}"
        self._keys: dict[str, int] = {}

    @classmethod
    def connect(cls, address: str | os.PathLike[str], *, timeout: float) -> ClusterSource:
        """The cluster whose data directory (or router tcp:// address) is `address`."""
        return cls(Client(address, timeout=timeout), owned=True)

    def namespaces(self) -> dict[str, Limits]:
        found: dict[str, Limits] = {}
        for name in self.client.namespaces():
            stats = self.client.namespace(name).stats()
            found[name] = Limits(int(stats["max_keys"]), int(stats["max_value_bytes"]))
            self._keys[name] = int(stats["keys"])
        return found

    def expected(self, names: list[str]) -> dict[str, int | None]:
        return {name: self._keys.get(name) for name in names}

    def rows(self, names: list[str]) -> Iterator[Row]:
        for name in names:
            for page in self._pages(name, Scope.PERMANENT):
                for key, packed, ts in page:
                    yield name, key.encode(), packed, ts

    def ephemeral(self, name: str) -> int:
        return sum(len(page) for page in self._pages(name, Scope.EPHEMERAL))

    def _pages(self, name: str, scope: Scope) -> Iterator[list[tuple[str, Any, int]]]:
        """Scan pages of one scope, raw values, shard by shard (as Namespace._scan, which
        unpacks them); a resize on the way is followed as there (ScanRoute)."""
        client = self.client
        core = client.core
        ns = core.namespace_name(name)
        route = ScanRoute(core)
        while (shard := route.next()) is not None:
            cursor: int | None = None
            while True:
                cursor, page = client.run(core.scan(ns, shard, cursor, scope))
                yield route.rows(ns, [(bytes(key).decode(), bytes(value), int(ts)) for key, value, ts in page])
                if cursor is None:
                    break
            route.done()

    def close(self) -> None:
        if self.owned:
            self.client.close()


class SnapshotSource(Source):
    """A snapshot file: checked whole (every block) before the first row is copied."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        with open_snapshot(self.path) as reader:  # header and footer checked now
            self.info = reader.info
        self.description = f"snapshot {self.path} (cut {self.info.cut} µs)"
        self._counts: Counter[str] | None = None

    def _count(self) -> Counter[str]:
        if self._counts is None:
            counts: Counter[str] = Counter()
            with open_snapshot(self.path) as reader:
                for ns, _key, _value, _ts in reader:
                    counts[ns.decode()] += 1
            self._counts = counts
        return self._counts

    def namespaces(self) -> dict[str, Limits]:
        found = {
            name: Limits(config["max_keys"], config["max_value_bytes"]) for name, config in self.info.namespaces.items()
        }
        for name in self._count():  # rows of a namespace the header does not list: no limits
            found.setdefault(name, Limits(0, 0))
        return found

    def expected(self, names: list[str]) -> dict[str, int | None]:
        counts = self._count()
        return {name: counts[name] for name in names}

    def rows(self, names: list[str]) -> Iterator[Row]:
        wanted = {name.encode() for name in names}
        with open_snapshot(self.path) as reader:
            for ns, key, packed, ts in reader:
                if ns in wanted:
                    yield ns.decode(), key, packed, ts

    def ephemeral(self, name: str) -> int:
        return 0  # a snapshot holds permanent keys only
