"""`AsyncClient`: the asyncio client. It mirrors `Client` with `await`, and keeps many
requests in flight at once (each awaits its own reply; none waits for another's).

    client = await kvcluster.AsyncClient.connect("./kv-data")
    users = await client.namespace("users")
    ts = await users.set("u:1", {"name": "Alice"})
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Generator, Iterable
from typing import Any, TypeVar

import zmq.asyncio

from kvcluster.batch import BatchMode, BatchResult
from kvcluster.client import batches, snapshots
from kvcluster.client.aio_links import AsyncStreamLink, AsyncZmqLink
from kvcluster.client.batches import Notice, Step
from kvcluster.client.connection import LinkPlan, Target, map_from_answer, resolve
from kvcluster.client.core import ADMIN, READ_OPS, RESIZE_TIMEOUT, Call, ClientCore, ScanRoute, StaleEpoch
from kvcluster.client.forks import fork_generation
from kvcluster.client.links import ConnectionLost
from kvcluster.client.snapshots import SAVE_TIMEOUT
from kvcluster.client.sync import DEFAULT_TIMEOUT
from kvcluster.codec import DEFAULT_MAX_MESSAGE, Limits, Op, Reply
from kvcluster.errors import ClusterUnavailable, InvalidRequest, KVError, Timeout
from kvcluster.router.clustermap import ClusterMap
from kvcluster.scope import Scope

R = TypeVar("R")

__all__ = ["AsyncClient", "AsyncNamespace"]


class AsyncClient:
    """A connection to one cluster for asyncio code. Make one with `await AsyncClient.connect(...)`."""

    def __init__(
        self,
        address: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        key: str | os.PathLike[str] | None = None,
        server_key: str | os.PathLike[str] | None = None,
    ) -> None:
        if not timeout > 0:
            raise InvalidRequest(f"timeout must be > 0 seconds, not {timeout!r}")
        self.timeout = float(timeout)
        self.target: Target = resolve(address, (key, server_key))
        self._generation = -1
        self._closed = False
        self._notices: set[asyncio.Task[Any]] = set()
        self.core = ClientCore(ClusterMap(1, ("",), self.target.admin_endpoint), max_message=DEFAULT_MAX_MESSAGE)

    @classmethod
    async def connect(
        cls,
        address: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        key: str | os.PathLike[str] | None = None,
        server_key: str | os.PathLike[str] | None = None,
    ) -> AsyncClient:
        """A connected client; `key` and `server_key` as for kvcluster.connect (CURVE)."""
        client = cls(address, timeout=timeout, key=key, server_key=server_key)
        await client._open()
        return client

    async def _open(self) -> None:
        self._generation = fork_generation()
        self._seq = itertools.count(1)
        self._context = zmq.asyncio.Context()
        self._identity = secrets.token_bytes(8)
        self._limits = Limits()
        self._admin = self._make_link(self.target.admin_plan())
        self._links: dict[int, AsyncStreamLink | AsyncZmqLink] = {}
        self.core = ClientCore(await self._fetch_map(), max_message=self._limits.max_message)

    async def _fetch_map(self) -> ClusterMap:
        try:
            info = await self._exchange(self._admin, self.core.admin(Op.CLUSTER_MAP), min(self.timeout, 5.0))
        except Timeout:
            return self.target.fallback_map()
        cluster_map, max_message = map_from_answer(info)
        self._limits = Limits(max_message=max_message)
        return cluster_map

    def _link_for(self, target: int) -> AsyncStreamLink | AsyncZmqLink:
        if target == ADMIN:
            return self._admin
        link = self._links.get(target)
        if link is None:
            link = self._links[target] = self._make_link(self.target.link_plan(self.core.map, target))
        return link

    def _make_link(self, plan: LinkPlan) -> AsyncStreamLink | AsyncZmqLink:
        if plan.kind == "stream":
            return AsyncStreamLink(plan.address, self._limits)
        return AsyncZmqLink(self._context, plan.address, self._identity, self._limits, plan.tag, self.target.keys)

    async def _exchange(self, link: AsyncStreamLink | AsyncZmqLink, call: Call, timeout: float) -> Any:
        seq = next(self._seq)
        reply = await link.exchange(self.core.encode(call, seq), seq, timeout)
        return self.core.interpret(reply, call)

    async def run(self, call: Call) -> Any:
        if self._closed:
            raise ClusterUnavailable("the client is closed")
        if self._generation != fork_generation():
            await self._open()  # first use, or a forked child: links of its own
        try:
            return await self._exchange(self._link_for(call.target), call, call.timeout or self.timeout)
        except (StaleEpoch, ConnectionLost) as exc:
            return await self._again(call, exc)

    async def _again(self, call: Call, error: StaleEpoch | ConnectionLost) -> Any:
        """The one second try a failed call gets: after a stale map (the shard refused it,
        nothing applied) with the map refreshed; after a lost connection only a read,
        whose outcome cannot have changed anything. Otherwise `error` stands."""
        if isinstance(error, StaleEpoch):
            await self._refresh()
            self.core.reroute(call)
        elif call.op not in READ_OPS:
            raise error
        return await self._exchange(self._link_for(call.target), call, call.timeout or self.timeout)

    def submit(self, call: Call) -> asyncio.Future[Any]:
        """`run(call)` as a future, started before this returns: for a caller that keeps
        many single-key requests in flight and needs them to reach their shard in the order
        it made them (the RESP gateway). Over a connected local stream no coroutine runs
        for the request; over ZeroMQ it is `run()` in a task. A request sent again (after
        a stale map, or a read after a lost connection) may be overtaken by later ones."""
        loop = asyncio.get_running_loop()
        link = None
        if not self._closed and self._generation == fork_generation():
            link = self._link_for(call.target)
        if not isinstance(link, AsyncStreamLink):
            return loop.create_task(self.run(call))
        seq = next(self._seq)
        sent = link.send(self.core.encode(call, seq), seq, call.timeout or self.timeout)
        result: asyncio.Future[Any] = loop.create_future()

        def answered(reply: asyncio.Future[Reply]) -> None:
            if result.cancelled():
                return
            if reply.cancelled():
                result.cancel()
                return
            try:
                result.set_result(self.core.interpret(reply.result(), call))
            except (StaleEpoch, ConnectionLost) as exc:  # as run() does
                again = loop.create_task(self._again(call, exc))
                again.add_done_callback(lambda task: _chain(task, result))
            except Exception as exc:  # handed to the caller, as run() would raise it
                result.set_exception(exc)

        sent.add_done_callback(answered)
        return result

    async def _outcome(self, call: Call) -> Any:
        """One call of a batch step: its result, or the KVError it raised. A stale map is
        refreshed and reported, for the plan to route the part again."""
        try:
            return await self._exchange(self._link_for(call.target), call, call.timeout or self.timeout)
        except StaleEpoch as exc:
            await self._refresh()
            return exc
        except ConnectionLost as exc:
            if call.op not in READ_OPS:
                return exc
        except KVError as exc:
            return exc
        try:
            return await self._exchange(self._link_for(call.target), call, call.timeout or self.timeout)
        except KVError as exc:
            return exc

    async def drive(self, plan: Generator[Step, list[Any], R]) -> R:
        """Run a batch plan (client/batches.py): each step's calls are gathered."""
        if self._closed:
            raise ClusterUnavailable("the client is closed")
        if self._generation != fork_generation():
            await self._open()
        try:
            step = next(plan)
            while True:
                if isinstance(step, Notice):
                    for call in step:  # answers nobody waits for
                        task = asyncio.get_running_loop().create_task(self._outcome(call))
                        self._notices.add(task)
                        task.add_done_callback(self._notices.discard)
                    step = plan.send([])
                else:
                    step = plan.send(list(await asyncio.gather(*(self._outcome(call) for call in step))))
        except StopIteration as done:
            result: R = done.value
            return result

    async def _refresh(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()
        self.core.map = await self._fetch_map()

    # -- administration --------------------------------------------------------------

    async def namespace(self, name: str) -> AsyncNamespace:
        await self.run(self.core.admin(Op.NS_STATS, name))
        return AsyncNamespace(self, name)

    async def create_namespace(self, name: str, *, max_keys: int = 0, max_value_bytes: int = 0) -> AsyncNamespace:
        self.core.namespace_name(name)
        await self.run(self.core.admin(Op.NS_CREATE, name, max_keys, max_value_bytes))
        return AsyncNamespace(self, name)

    async def update_namespace(
        self, name: str, *, max_keys: int | None = None, max_value_bytes: int | None = None
    ) -> None:
        await self.run(self.core.admin(Op.NS_UPDATE, name, max_keys, max_value_bytes))

    async def delete_namespace(self, name: str) -> None:
        await self.run(self.core.admin(Op.NS_DELETE, name))

    async def namespaces(self) -> list[str]:
        return list(await self.run(self.core.admin(Op.NS_LIST)))

    async def stats(self) -> dict[str, Any]:
        return dict(await self.run(self.core.admin(Op.CLUSTER_STATS)))

    async def save_snapshot(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> dict[str, Any]:
        """See Client.save_snapshot."""
        call = snapshots.save_call(self.core, path, None, timeout or max(self.timeout, SAVE_TIMEOUT))
        return dict(await self.run(call))

    async def load_snapshot(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """See Client.load_snapshot (the file is verified and read in this thread)."""
        return await self.drive(snapshots.load_snapshot(self.core, path, self.timeout))

    async def set_autosave(self, interval: float, pattern: str, *, namespace: str | None = None, keep: int = 0) -> None:
        await self.run(self.core.admin(Op.AUTOSAVE_SET, namespace, interval, pattern, keep))

    async def remove_autosave(self, namespace: str | None = None) -> None:
        await self.run(self.core.admin(Op.AUTOSAVE_SET, namespace, 0, "-", 0))

    async def autosave_tasks(self) -> list[dict[str, Any]]:
        return list(await self.run(self.core.admin(Op.AUTOSAVE_LIST)))

    async def rotate_journals(self) -> None:
        await self.run(self.core.admin(Op.ROTATE))

    async def resize(self, shards: int, *, timeout: float | None = None) -> dict[str, Any]:
        """Grow the cluster to `shards` shards, online (see `Client.resize`)."""
        result = dict(await self.run(self.core.resize(shards, timeout or max(self.timeout, RESIZE_TIMEOUT))))
        await self._refresh()
        return result

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._generation == fork_generation():
            for link in [*self._links.values(), self._admin]:
                link.close()
            self._context.destroy(linger=0)

    async def __aenter__(self) -> AsyncClient:
        if self._generation != fork_generation():
            await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """Settle `target` as `source` ended."""
    if target.cancelled():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())


class AsyncNamespace:
    """`Namespace` for asyncio: the same methods, awaited."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.client = client
        self.name = name
        self._ns = client.core.namespace_name(name)

    def __repr__(self) -> str:
        return f"AsyncNamespace({self.name!r} at {self.client.target.address!r})"

    async def set(self, key: str, value: Any, *, scope: Scope = Scope.PERMANENT) -> int:
        return int(await self.client.run(self.client.core.set(self._ns, key, value, scope)))

    async def get(self, key: str, default: Any = None) -> Any:
        return await self.client.run(self.client.core.get(self._ns, key, default))

    async def get_versioned(self, key: str) -> tuple[Any, int] | None:
        result: tuple[Any, int] | None = await self.client.run(self.client.core.get_versioned(self._ns, key))
        return result

    async def update(self, key: str, value: Any) -> Any:
        return await self.client.run(self.client.core.update(self._ns, key, value))

    async def exists(self, key: str) -> bool:
        return bool(await self.client.run(self.client.core.exists(self._ns, key)))

    async def consume(self, key: str) -> Any:
        return await self.client.run(self.client.core.consume(self._ns, key))

    async def delete(self, key: str) -> bool:
        return bool(await self.client.run(self.client.core.delete(self._ns, key)))

    # -- batches -------------------------------------------------------------------

    async def set_many(
        self, items: Any, mode: BatchMode = BatchMode.ALL_OR_NOTHING, *, scope: Scope = Scope.PERMANENT
    ) -> BatchResult:
        """Store many keys at once (see `Namespace.set_many`)."""
        client = self.client
        return await client.drive(batches.set_many(client.core, self._ns, items, mode, scope, client.timeout))

    async def get_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        client = self.client
        return await client.drive(batches.get_many(client.core, self._ns, keys, mode, client.timeout))

    async def delete_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        client = self.client
        return await client.drive(batches.delete_many(client.core, self._ns, keys, mode, client.timeout))

    async def consume_many(self, keys: Iterable[str], mode: BatchMode = BatchMode.ALL_OR_NOTHING) -> BatchResult:
        client = self.client
        return await client.drive(batches.consume_many(client.core, self._ns, keys, mode, client.timeout))

    async def count(self) -> int:
        """The number of keys (`len()` of the sync proxy)."""
        core = self.client.core
        while True:
            epoch = core.map.epoch
            total = int(sum([await self.client.run(core.count(self._ns, shard)) for shard in core.shards()]))
            if core.map.epoch == epoch:  # else a resize moved keys meanwhile: count again
                return total

    async def items(self, *, scope: Scope | None = None) -> AsyncIterator[tuple[str, Any]]:
        async for key, value, _ts in self._scan(scope):
            yield key, value

    async def get_all(self, *, scope: Scope | None = None) -> dict[str, tuple[Any, int]]:
        return {key: (value, ts) async for key, value, ts in self._scan(scope)}

    async def _scan(self, scope: Scope | None) -> AsyncIterator[tuple[str, Any, int]]:
        core = self.client.core
        route = ScanRoute(core)
        while (shard := route.next()) is not None:
            cursor: int | None = None
            while True:
                cursor, rows = core.scan_page(await self.client.run(core.scan(self._ns, shard, cursor, scope)))
                for row in route.rows(self._ns, rows):
                    yield row
                if cursor is None:
                    break
            route.done()

    async def stats(self) -> dict[str, Any]:
        return dict(await self.client.run(self.client.core.admin(Op.NS_STATS, self.name)))

    async def save_snapshot(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> dict[str, Any]:
        """A snapshot of this namespace alone (see Client.save_snapshot)."""
        client = self.client
        call = snapshots.save_call(client.core, path, self.name, timeout or max(client.timeout, SAVE_TIMEOUT))
        return dict(await client.run(call))
