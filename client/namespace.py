"""`Namespace`: the proxy for one namespace — the single-key API and the mapping protocol.

Proxies are picklable: a copy sent to another process (a `multiprocess.Pool` worker,
spawned or forked) connects there by itself, sharing one client per process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from kvcluster.batch import BatchMode, BatchResult
from kvcluster.client import batches, snapshots
from kvcluster.client.core import ScanRoute
from kvcluster.client.forks import fork_generation
from kvcluster.client.snapshots import SAVE_TIMEOUT
from kvcluster.codec import Op
from kvcluster.scope import Scope

if TYPE_CHECKING:
    from kvcluster.client.sync import Client

__all__ = ["Namespace", "shared_client"]


class Namespace:
    """The keys of one namespace. Methods raise KVError subclasses; a timeout is `Timeout`."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self._ns = client.core.namespace_name(name)

    def __repr__(self) -> str:
        return f"Namespace({self.name!r} at {self.client.target.address!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        client = self.client
        return (_restore_namespace, (client.target.address, client.timeout, self.name, client.target.key_paths))

    # -- single keys -----------------------------------------------------------------

    def set(self, key: str, value: Any, *, scope: Scope = Scope.PERMANENT) -> int:
        """Store `value` under `key`; returns the write's timestamp (µs since the epoch)."""
        return int(self.client.run(self.client.core.set(self._ns, key, value, scope)))

    def get(self, key: str, default: Any = None) -> Any:
        return self.client.run(self.client.core.get(self._ns, key, default))

    def get_versioned(self, key: str) -> tuple[Any, int] | None:
        """(value, timestamp) of `key`, or None."""
        result: tuple[Any, int] | None = self.client.run(self.client.core.get_versioned(self._ns, key))
        return result

    def update(self, key: str, value: Any) -> Any:
        """Replace the value of an existing key; returns the old value. KeyNotFound if absent."""
        return self.client.run(self.client.core.update(self._ns, key, value))

    def exists(self, key: str) -> bool:
        return bool(self.client.run(self.client.core.exists(self._ns, key)))

    def consume(self, key: str) -> Any:
        """Atomically read and delete `key`; returns its value. KeyNotFound if absent."""
        return self.client.run(self.client.core.consume(self._ns, key))

    def delete(self, key: str) -> bool:
        """Delete `key`; True if it existed."""
        return bool(self.client.run(self.client.core.delete(self._ns, key)))

    # -- batches -------------------------------------------------------------------

    def set_many(
        self, items: Any, mode: BatchMode = BatchMode.ALL_OR_NOTHING, *, scope: Scope = Scope.PERMANENT
    ) -> BatchResult:
        """Store many keys at once: `items` is a mapping or (key, value) pairs.

        ALL_OR_NOTHING: every key is written, at one timestamp, or none is (BatchFailed
        says why) — across shards and across a crash of any process. BEST_EFFORT: each
        key on its own; `errors` lists those that failed. `data`: each key's timestamp.
        """
        client = self.client
        return client.drive(batches.set_many(client.core, self._ns, items, mode, scope, client.timeout))

    def get_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        """Read many keys as one consistent view; `data` maps each key found to its value.

        ALL_OR_NOTHING: BatchFailed (listing them) if any key is missing. BEST_EFFORT: a
        missing key is its KeyNotFound in `errors`.
        """
        client = self.client
        return client.drive(batches.get_many(client.core, self._ns, keys, mode, client.timeout))

    def delete_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        """Delete many keys; a missing key is its KeyNotFound (ALL_OR_NOTHING: nothing is deleted)."""
        client = self.client
        return client.drive(batches.delete_many(client.core, self._ns, keys, mode, client.timeout))

    def consume_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        """Read and delete many keys; `data` holds the values taken."""
        client = self.client
        return client.drive(batches.consume_many(client.core, self._ns, keys, mode, client.timeout))

    # -- the mapping protocol ------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.client.run(self.client.core.get_item(self._ns, key))

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        self.client.run(self.client.core.delete_item(self._ns, key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.exists(key)

    def __len__(self) -> int:
        core = self.client.core
        while True:
            epoch = core.map.epoch
            total = int(sum(self.client.run(core.count(self._ns, shard)) for shard in core.shards()))
            if core.map.epoch == epoch:  # else a resize moved keys meanwhile: count again
                return total

    def __iter__(self) -> Iterator[str]:
        return (key for key, _value, _ts in self._scan(None))

    def keys(self) -> Iterator[str]:
        return iter(self)

    def items(self, *, scope: Scope | None = None) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs, streamed shard by shard in pages; never one giant message.

        Keys present for the whole scan are returned exactly once; keys written or
        deleted during it may or may not be.
        """
        return ((key, value) for key, value, _ts in self._scan(scope))

    def values(self) -> Iterator[Any]:
        return (value for _key, value, _ts in self._scan(None))

    def get_all(self, *, scope: Scope | None = None) -> dict[str, tuple[Any, int]]:
        """{key: (value, timestamp)} of the whole namespace (or of one scope)."""
        return {key: (value, ts) for key, value, ts in self._scan(scope)}

    def _scan(self, scope: Scope | None) -> Iterator[tuple[str, Any, int]]:
        core = self.client.core
        route = ScanRoute(core)
        while (shard := route.next()) is not None:
            cursor: int | None = None
            while True:
                page = self.client.run(core.scan(self._ns, shard, cursor, scope))
                cursor, rows = core.scan_page(page)
                yield from route.rows(self._ns, rows)
                if cursor is None:
                    break
            route.done()

    def stats(self) -> dict[str, Any]:
        """Keys held and the namespace's limits."""
        return dict(self.client.run(self.client.core.admin(Op.NS_STATS, self.name)))

    def save_snapshot(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> dict[str, Any]:
        """A snapshot of this namespace alone (see Client.save_snapshot)."""
        client = self.client
        call = snapshots.save_call(client.core, path, self.name, timeout or max(client.timeout, SAVE_TIMEOUT))
        return dict(client.run(call))


_shared: dict[tuple[str, float, tuple[str, str] | None, int], Client] = {}
_shared_lock = threading.Lock()


def shared_client(address: str, timeout: float, key_paths: tuple[str, str] | None = None) -> Client:
    """One client per (address, timeout, keys) in this process, made on first use."""
    from kvcluster.client.sync import Client

    shared = (address, timeout, key_paths, fork_generation())
    with _shared_lock:
        client = _shared.get(shared)
        if client is None:
            key, server_key = key_paths or (None, None)
            client = _shared[shared] = Client(address, timeout=timeout, key=key, server_key=server_key)
        return client


def _restore_namespace(address: str, timeout: float, name: str, key_paths: tuple[str, str] | None = None) -> Namespace:
    return Namespace(shared_client(address, timeout, key_paths), name)
