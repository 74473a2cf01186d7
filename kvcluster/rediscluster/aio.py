"""`AsyncRedisClusterClient` and `AsyncRedisClusterNamespace`: the asyncio client of the
Redis Cluster backend, mirroring `kvcluster.AsyncClient` and `AsyncNamespace`.

    client = await kvcluster.connect_async("redis+cluster://127.0.0.1:7000")
    users = await client.namespace("users")
    ts = await users.set("u:1", {"name": "Alice"})

It runs the same plans as the sync client (core.py, batches.py, registry.py) over
redis-py's asyncio `RedisCluster`; many operations may be in flight at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kvcluster.batch import BatchMode, BatchResult
from kvcluster.client.forks import fork_generation
from kvcluster.errors import ClusterUnavailable
from kvcluster.keys import encode_namespace
from kvcluster.rediscluster import batches, core
from kvcluster.rediscluster.address import parse_address
from kvcluster.rediscluster.errors import REDIS_ERRORS, is_lost_connection, is_noscript, translate
from kvcluster.rediscluster.plans import READS, Pause, Plan, Step
from kvcluster.rediscluster.registry import Registry
from kvcluster.rediscluster.scripts import SCRIPTS
from kvcluster.rediscluster.status import cluster_stats, ping
from kvcluster.rediscluster.sync import DEFAULT_TIMEOUT, checked_timeout, command_routing
from kvcluster.rediscluster.unsupported import unsupported
from kvcluster.scope import Scope

R = TypeVar("R")

__all__ = ["AsyncRedisClusterClient", "AsyncRedisClusterNamespace"]


class AsyncRedisClusterClient:
    """A connection to one Redis Cluster for asyncio code: `await AsyncRedisClusterClient.connect(...)`."""

    def __init__(self, address: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = checked_timeout(timeout)
        self.seeds = parse_address(os.fspath(address))
        self.address = str(self.seeds)
        self.registry = Registry()
        self._closed = False
        self._generation = -1
        self._redis: Any = None

    @classmethod
    async def connect(
        cls, address: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT
    ) -> AsyncRedisClusterClient:
        client = cls(address, timeout=timeout)
        await client._open()
        return client

    # -- plumbing --------------------------------------------------------------------

    async def _open(self) -> None:
        self._generation = fork_generation()
        try:
            self._redis = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in self.seeds.nodes],
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # redis-py would resend writes that timed out
                decode_responses=False,
            )
            await self._redis.initialize()
        except REDIS_ERRORS as exc:
            raise translate(exc) from None
        await self.run(self.registry.ensure_default())

    async def _connection(self) -> Any:
        if self._closed:
            raise ClusterUnavailable("the client is closed")
        if self._generation != fork_generation():
            await self._open()  # first use, or a forked child: connections of its own
        return self._redis

    async def run(self, plan: Plan[R]) -> R:
        """Run a plan: each step's commands go out together; the plan gets their results."""
        try:
            step = next(plan)
            while True:
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                    step = plan.send([])
                else:
                    step = plan.send(await self.execute(step))
        except StopIteration as done:
            result: R = done.value
            return result

    async def execute(self, step: Step) -> list[Any]:
        """As `RedisClusterClient.execute`, awaited."""
        redis = await self._connection()
        results = await self._send(redis, step)
        again = [i for i, result in enumerate(results) if is_noscript(result)]
        if again:
            await self._load_scripts(redis)
        again += [i for i, result in enumerate(results) if is_lost_connection(result) and step[i].args[0] in READS]
        if again:
            for i, result in zip(again, await self._send(redis, [step[i] for i in again]), strict=True):
                results[i] = result
        return [translate(result) if isinstance(result, BaseException) else result for result in results]

    @staticmethod
    async def _send(redis: Any, step: Step) -> list[Any]:
        if len(step) == 1 or any(command.node for command in step):
            results: list[Any] = []
            for command in step:
                try:
                    results.append(await redis.execute_command(*command.args, **command_routing(redis, command)))
                except REDIS_ERRORS as exc:  # every failure of a command becomes its result
                    results.append(exc)
            return results
        pipe = redis.pipeline(transaction=False)
        try:
            for command in step:
                pipe.execute_command(*command.args)
            return list(await pipe.execute(raise_on_error=False))
        except REDIS_ERRORS as exc:
            return [exc] * len(step)

    @staticmethod
    async def _load_scripts(redis: Any) -> None:
        for script in SCRIPTS:
            try:
                await redis.execute_command("SCRIPT LOAD", script.source, target_nodes=RedisCluster.PRIMARIES)
            except REDIS_ERRORS as exc:
                raise translate(exc) from None

    async def primaries(self) -> list[str]:
        return [node.name for node in (await self._connection()).get_primaries()]

    # -- administration --------------------------------------------------------------

    async def namespace(self, name: str) -> AsyncRedisClusterNamespace:
        await self.run(self.registry.limits(name, fresh=True))
        return AsyncRedisClusterNamespace(self, name)

    async def create_namespace(
        self, name: str, *, max_keys: int = 0, max_value_bytes: int = 0
    ) -> AsyncRedisClusterNamespace:
        await self.run(self.registry.create(name, max_keys, max_value_bytes))
        return AsyncRedisClusterNamespace(self, name)

    async def update_namespace(
        self, name: str, *, max_keys: int | None = None, max_value_bytes: int | None = None
    ) -> None:
        await self.run(self.registry.update(name, max_keys, max_value_bytes, await self.primaries()))

    async def delete_namespace(self, name: str) -> None:
        await self.run(self.registry.delete(name, await self.primaries()))

    async def namespaces(self) -> list[str]:
        return await self.run(self.registry.names())

    async def stats(self) -> dict[str, Any]:
        return await self.run(cluster_stats(self.registry, self.address, await self.primaries()))

    async def ping(self) -> dict[str, Any]:
        return await self.run(ping(self.address, await self.primaries()))

    async def save_snapshot(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> dict[str, Any]:
        raise unsupported("save_snapshot")

    async def load_snapshot(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        raise unsupported("load_snapshot")

    async def set_autosave(self, interval: float, pattern: str, *, namespace: str | None = None, keep: int = 0) -> None:
        raise unsupported("autosave")

    async def remove_autosave(self, namespace: str | None = None) -> None:
        raise unsupported("autosave")

    async def autosave_tasks(self) -> list[dict[str, Any]]:
        raise unsupported("autosave")

    async def rotate_journals(self) -> None:
        raise unsupported("rotate_journals")

    async def resize(self, shards: int, *, timeout: float | None = None) -> dict[str, Any]:
        raise unsupported("resize")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._generation == fork_generation() and self._redis is not None:
            await self._redis.aclose()

    async def __aenter__(self) -> AsyncRedisClusterClient:
        if self._generation != fork_generation():
            await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncRedisClusterClient({self.address!r})"


class AsyncRedisClusterNamespace:
    """`RedisClusterNamespace` for asyncio: the same methods, awaited."""

    def __init__(self, client: AsyncRedisClusterClient, name: str) -> None:
        self.client = client
        self.name = name
        self._space = core.Space(name, encode_namespace(name), client.timeout)

    def __repr__(self) -> str:
        return f"AsyncRedisClusterNamespace({self.name!r} at {self.client.address!r})"

    async def set(self, key: str, value: Any, *, scope: Scope = Scope.PERMANENT) -> int:
        return await self.client.run(core.write(self.client.registry, self._space, key, value, scope))

    async def get(self, key: str, default: Any = None) -> Any:
        return await self.client.run(core.get(self.client.registry, self._space, key, default))

    async def get_versioned(self, key: str) -> tuple[Any, int] | None:
        return await self.client.run(core.get_versioned(self.client.registry, self._space, key))

    async def update(self, key: str, value: Any) -> Any:
        return await self.client.run(core.update(self.client.registry, self._space, key, value))

    async def exists(self, key: str) -> bool:
        return await self.client.run(core.exists(self.client.registry, self._space, key))

    async def consume(self, key: str) -> Any:
        return await self.client.run(core.consume(self.client.registry, self._space, key))

    async def delete(self, key: str) -> bool:
        return await self.client.run(core.delete(self.client.registry, self._space, key))

    # -- batches -------------------------------------------------------------------

    async def set_many(
        self, items: Any, mode: BatchMode = BatchMode.ALL_OR_NOTHING, *, scope: Scope = Scope.PERMANENT
    ) -> BatchResult:
        return await self.client.run(batches.set_many(self.client.registry, self._space, items, mode, scope))

    async def get_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        return await self.client.run(batches.get_many(self.client.registry, self._space, keys, mode))

    async def delete_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        return await self.client.run(batches.delete_many(self.client.registry, self._space, keys, mode))

    async def consume_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        return await self.client.run(batches.consume_many(self.client.registry, self._space, keys, mode))

    # -- counting and scans ------------------------------------------------------------

    async def count(self) -> int:
        """The number of keys (`len()` of the sync proxy), counted by SCAN."""
        return await self.client.run(core.count(self.client.registry, self._space, await self.client.primaries()))

    async def items(self, *, scope: Scope | None = None) -> AsyncIterator[tuple[str, Any]]:
        async for key, value, _ts in self._scan(scope):
            yield key, value

    async def get_all(self, *, scope: Scope | None = None) -> dict[str, tuple[Any, int]]:
        return {key: (value, ts) async for key, value, ts in self._scan(scope)}

    async def _scan(self, scope: Scope | None) -> AsyncIterator[tuple[str, Any, int]]:
        client = self.client
        for node in await client.primaries():
            cursor = 0
            while True:
                cursor, rows = await client.run(core.scan_rows(client.registry, self._space, node, cursor, scope))
                for row in rows:
                    yield row
                if not cursor:
                    break

    async def stats(self) -> dict[str, Any]:
        client = self.client
        return await client.run(core.namespace_stats(client.registry, self._space, await client.primaries()))

    async def save_snapshot(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> dict[str, Any]:
        raise unsupported("save_snapshot")
