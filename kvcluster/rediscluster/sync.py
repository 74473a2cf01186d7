"""`RedisClusterClient` and `RedisClusterNamespace`: the synchronous client of the Redis
Cluster backend, with the public API of `kvcluster.Client` and `kvcluster.Namespace`.

It only moves commands: each operation is a plan (core.py, batches.py, registry.py)
whose steps go out through redis-py's `RedisCluster` — one command directly, several
as one cluster pipeline (one round trip per node). After `fork()` the child makes
its own connections and never touches its parent's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from kvcluster.batch import BatchMode, BatchResult
from kvcluster.client.forks import fork_generation
from kvcluster.errors import ClusterUnavailable, InvalidRequest
from kvcluster.keys import encode_namespace
from kvcluster.rediscluster import batches, core
from kvcluster.rediscluster.address import parse_address
from kvcluster.rediscluster.errors import REDIS_ERRORS, is_lost_connection, is_noscript, translate
from kvcluster.rediscluster.plans import READS, Command, Pause, Plan, Step
from kvcluster.rediscluster.registry import Registry
from kvcluster.rediscluster.scripts import SCRIPTS
from kvcluster.rediscluster.status import cluster_stats, ping
from kvcluster.rediscluster.unsupported import unsupported
from kvcluster.scope import Scope

R = TypeVar("R")

__all__ = [
    "DEFAULT_TIMEOUT",
    "RedisClusterClient",
    "RedisClusterNamespace",
    "checked_timeout",
    "command_routing",
    "shared_client",
]

DEFAULT_TIMEOUT = 10.0


def checked_timeout(timeout: Any) -> float:
    if type(timeout) not in (int, float) or not timeout > 0:
        raise InvalidRequest(f"timeout must be > 0 seconds, not {timeout!r}")
    return float(timeout)


class RedisClusterClient:
    """A connection to one Redis Cluster. Use `kvcluster.connect("redis+cluster://...")`."""

    def __init__(self, address: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = checked_timeout(timeout)
        self.seeds = parse_address(os.fspath(address))
        self.address = str(self.seeds)
        self.registry = Registry()
        self._closed = False
        self._generation = -1
        self._redis: Any = None
        self._open()

    # -- plumbing --------------------------------------------------------------------

    def _open(self) -> None:
        """Connect: at first use, and in a child after fork()."""
        self._generation = fork_generation()
        try:
            self._redis = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in self.seeds.nodes],  # type: ignore[no-untyped-call]
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # redis-py would resend writes that timed out
                decode_responses=False,
            )
        except REDIS_ERRORS as exc:
            raise translate(exc) from None
        self.run(self.registry.ensure_default())

    def _connection(self) -> Any:
        if self._closed:
            raise ClusterUnavailable("the client is closed")
        if self._generation != fork_generation():
            self._open()  # a forked child: connections of its own, the parent's left alone
        return self._redis

    def run(self, plan: Plan[R]) -> R:
        """Run a plan: each step's commands go out together; the plan gets their results."""
        try:
            step = next(plan)
            while True:
                if isinstance(step, Pause):
                    time.sleep(step.seconds)
                    step = plan.send([])
                else:
                    step = plan.send(self.execute(step))
        except StopIteration as done:
            result: R = done.value
            return result

    def execute(self, step: Step) -> list[Any]:
        """Every command's result, or the KVError it raised. A node that does not know
        a script (NOSCRIPT: nothing ran) is given them all, and the command is sent
        again; so is a read whose connection broke. A write is never sent twice."""
        redis = self._connection()
        results = self._send(redis, step)
        again = [i for i, result in enumerate(results) if is_noscript(result)]
        if again:
            self._load_scripts(redis)
        again += [i for i, result in enumerate(results) if is_lost_connection(result) and step[i].args[0] in READS]
        if again:
            for i, result in zip(again, self._send(redis, [step[i] for i in again]), strict=True):
                results[i] = result
        return [translate(result) if isinstance(result, BaseException) else result for result in results]

    @staticmethod
    def _send(redis: Any, step: Step) -> list[Any]:
        if len(step) == 1 or any(command.node for command in step):
            results: list[Any] = []
            for command in step:
                try:
                    results.append(redis.execute_command(*command.args, **command_routing(redis, command)))
                except REDIS_ERRORS as exc:  # every failure of a command becomes its result
                    results.append(exc)
            return results
        pipe = redis.pipeline(transaction=False)
        try:
            for command in step:
                pipe.execute_command(*command.args, **_script_node(redis, command))
            return list(pipe.execute(raise_on_error=False))
        except REDIS_ERRORS as exc:
            return [exc] * len(step)
        finally:
            pipe.reset()

    @staticmethod
    def _load_scripts(redis: Any) -> None:
        for script in SCRIPTS:
            try:
                redis.execute_command("SCRIPT LOAD", script.source, target_nodes=RedisCluster.PRIMARIES)
            except REDIS_ERRORS as exc:
                raise translate(exc) from None

    def primaries(self) -> list[str]:
        """The primaries' names ("host:port"), as the client last learned them."""
        return [node.name for node in self._connection().get_primaries()]

    # -- administration --------------------------------------------------------------

    def namespace(self, name: str) -> RedisClusterNamespace:
        """A proxy for namespace `name`; NamespaceNotFound if it does not exist."""
        self.run(self.registry.limits(name, fresh=True))
        return RedisClusterNamespace(self, name)

    def create_namespace(self, name: str, *, max_keys: int = 0, max_value_bytes: int = 0) -> RedisClusterNamespace:
        """Create a namespace (0: no limit); NamespaceExists if it does."""
        self.run(self.registry.create(name, max_keys, max_value_bytes))
        return RedisClusterNamespace(self, name)

    def update_namespace(self, name: str, *, max_keys: int | None = None, max_value_bytes: int | None = None) -> None:
        self.run(self.registry.update(name, max_keys, max_value_bytes, self.primaries()))

    def delete_namespace(self, name: str) -> None:
        """Remove the namespace and every key of it (key by key: not atomic)."""
        self.run(self.registry.delete(name, self.primaries()))

    def namespaces(self) -> list[str]:
        return self.run(self.registry.names())

    def stats(self) -> dict[str, Any]:
        """The Redis Cluster's part of `kvcluster status --json` (docs/redis-cluster.md)."""
        return self.run(cluster_stats(self.registry, self.address, self.primaries()))

    def ping(self) -> dict[str, Any]:
        return self.run(ping(self.address, self.primaries()))

    def save_snapshot(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> dict[str, Any]:
        raise unsupported("save_snapshot")

    def load_snapshot(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        raise unsupported("load_snapshot")

    def set_autosave(self, interval: float, pattern: str, *, namespace: str | None = None, keep: int = 0) -> None:
        raise unsupported("autosave")

    def remove_autosave(self, namespace: str | None = None) -> None:
        raise unsupported("autosave")

    def autosave_tasks(self) -> list[dict[str, Any]]:
        raise unsupported("autosave")

    def rotate_journals(self) -> None:
        raise unsupported("rotate_journals")

    def resize(self, shards: int, *, timeout: float | None = None) -> dict[str, Any]:
        raise unsupported("resize")

    def shutdown(self) -> None:
        raise unsupported("shutdown")

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._generation == fork_generation() and self._redis is not None:
            self._redis.close()

    def __enter__(self) -> RedisClusterClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisClusterClient({self.address!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled, a client is its address: the copy connects in its own process."""
        return (_restore_client, (self.address, self.timeout))


def _restore_client(address: str, timeout: float) -> RedisClusterClient:
    return RedisClusterClient(address, timeout=timeout)


def _script_node(redis: Any, command: Command) -> dict[str, Any]:
    """The node of a script's keys, named up front: redis-py's cluster pipeline would
    otherwise ask the server for them (COMMAND GETKEYS), one round trip per script.
    A MOVED answer still sends the script again by its keys."""
    args = command.args
    if args[0] != "EVALSHA" or int(args[2]) < 1:
        return {}
    return {"target_nodes": redis.get_node_from_key(args[3])}


def command_routing(redis: Any, command: Command) -> dict[str, Any]:
    """The keywords of `execute_command` that send `command` to its node, if it names
    one (redis-py's sync and asyncio RedisCluster alike); none if it does not."""
    if command.node is None:
        return {}
    node = redis.get_node(node_name=command.node)
    if node is None:
        raise ClusterUnavailable(f"Redis Cluster node {command.node} is no longer a primary; retry")
    return {"target_nodes": node}


class RedisClusterNamespace:
    """The keys of one namespace in a Redis Cluster (the API of `kvcluster.Namespace`)."""

    def __init__(self, client: RedisClusterClient, name: str) -> None:
        self.client = client
        self.name = name
        self._space = core.Space(name, encode_namespace(name), client.timeout)

    def __repr__(self) -> str:
        return f"RedisClusterNamespace({self.name!r} at {self.client.address!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_namespace, (self.client.address, self.client.timeout, self.name))

    # -- single keys -----------------------------------------------------------------

    def set(self, key: str, value: Any, *, scope: Scope = Scope.PERMANENT) -> int:
        """Store `value` under `key`; returns the write's timestamp (µs since the epoch)."""
        return self.client.run(core.write(self.client.registry, self._space, key, value, scope))

    def get(self, key: str, default: Any = None) -> Any:
        return self.client.run(core.get(self.client.registry, self._space, key, default))

    def get_versioned(self, key: str) -> tuple[Any, int] | None:
        """(value, timestamp) of `key`, or None."""
        return self.client.run(core.get_versioned(self.client.registry, self._space, key))

    def update(self, key: str, value: Any) -> Any:
        """Replace the value of an existing key; returns the old value. KeyNotFound if absent."""
        return self.client.run(core.update(self.client.registry, self._space, key, value))

    def exists(self, key: str) -> bool:
        return self.client.run(core.exists(self.client.registry, self._space, key))

    def consume(self, key: str) -> Any:
        """Atomically read and delete `key`; returns its value. KeyNotFound if absent."""
        return self.client.run(core.consume(self.client.registry, self._space, key))

    def delete(self, key: str) -> bool:
        """Delete `key`; True if it existed."""
        return self.client.run(core.delete(self.client.registry, self._space, key))

    # -- batches -------------------------------------------------------------------

    def set_many(
        self, items: Any, mode: BatchMode = BatchMode.ALL_OR_NOTHING, *, scope: Scope = Scope.PERMANENT
    ) -> BatchResult:
        """Store many keys. ALL_OR_NOTHING needs keys of one hash slot (see batches.py)."""
        return self.client.run(batches.set_many(self.client.registry, self._space, items, mode, scope))

    def get_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        return self.client.run(batches.get_many(self.client.registry, self._space, keys, mode))

    def delete_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        return self.client.run(batches.delete_many(self.client.registry, self._space, keys, mode))

    def consume_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        return self.client.run(batches.consume_many(self.client.registry, self._space, keys, mode))

    # -- the mapping protocol ------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.client.run(core.get_item(self.client.registry, self._space, key))

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        self.client.run(core.delete_item(self.client.registry, self._space, key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.exists(key)

    def __len__(self) -> int:
        return self.client.run(core.count(self.client.registry, self._space, self.client.primaries()))

    def __iter__(self) -> Iterator[str]:
        return (key for key, _value, _ts in self._scan(None))

    def keys(self) -> Iterator[str]:
        return iter(self)

    def items(self, *, scope: Scope | None = None) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs, streamed primary by primary in SCAN pages."""
        return ((key, value) for key, value, _ts in self._scan(scope))

    def values(self) -> Iterator[Any]:
        return (value for _key, value, _ts in self._scan(None))

    def get_all(self, *, scope: Scope | None = None) -> dict[str, tuple[Any, int]]:
        """{key: (value, timestamp)} of the whole namespace (or of one scope)."""
        return {key: (value, ts) for key, value, ts in self._scan(scope)}

    def _scan(self, scope: Scope | None) -> Iterator[tuple[str, Any, int]]:
        client = self.client
        for node in client.primaries():
            cursor = 0
            while True:
                cursor, rows = client.run(core.scan_rows(client.registry, self._space, node, cursor, scope))
                yield from rows
                if not cursor:
                    break

    def stats(self) -> dict[str, Any]:
        """Keys held (counted by SCAN) and the namespace's limits."""
        return self.client.run(core.namespace_stats(self.client.registry, self._space, self.client.primaries()))

    def save_snapshot(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> dict[str, Any]:
        raise unsupported("save_snapshot")


_shared: dict[tuple[str, float, int], RedisClusterClient] = {}
_shared_lock = threading.Lock()


def shared_client(address: str, timeout: float) -> RedisClusterClient:
    """One client per (address, timeout) in this process, made on first use."""
    key = (address, timeout, fork_generation())
    with _shared_lock:
        client = _shared.get(key)
        if client is None or client._closed:
            client = _shared[key] = RedisClusterClient(address, timeout=timeout)
        return client


def _restore_namespace(address: str, timeout: float, name: str) -> RedisClusterNamespace:
    return RedisClusterNamespace(shared_client(address, timeout), name)
