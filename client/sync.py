"""`Client`: the synchronous client, a thin adapter that moves the core's bytes over ZeroMQ.

The client routes each request straight to the shard that owns its key, over the
shard's local fast path (a Unix stream socket) or, for a cluster reached through a
router, over ZeroMQ; administration goes to the coordinator over ZeroMQ. A request waits for the reply with its
own sequence number until the deadline; a reply that comes later is dropped when it
arrives, never taken for another request's. A timeout is `Timeout`, never a miss.
One thread at a time uses a Client (calls are serialised by a lock); after `fork()`
the child builds its own sockets and never touches its parent's.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import threading
import time
from collections.abc import Generator
from typing import Any, TypeVar

import zmq

from kvcluster.client import snapshots
from kvcluster.client.batches import Notice, Step
from kvcluster.client.connection import LinkPlan, Target, map_from_answer, resolve
from kvcluster.client.core import ADMIN, READ_OPS, RESIZE_TIMEOUT, Call, ClientCore, StaleEpoch
from kvcluster.client.forks import fork_generation
from kvcluster.client.links import ConnectionLost, StreamLink, ZmqLink
from kvcluster.client.namespace import Namespace
from kvcluster.client.snapshots import SAVE_TIMEOUT
from kvcluster.codec import DEFAULT_MAX_MESSAGE, Limits, Op
from kvcluster.errors import ClusterUnavailable, InvalidRequest, KVError, Timeout
from kvcluster.router.clustermap import ClusterMap

R = TypeVar("R")

__all__ = ["Client"]

DEFAULT_TIMEOUT = 10.0
NOTICE_TIMEOUT = 1.0  # seconds to deliver a notice to a peer that is restarting, at most


class Client:
    """A connection to one cluster. Use `kvcluster.connect(address)` to make one."""

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
        self._lock = threading.Lock()
        self._closed = False
        self._generation = -1
        self._open()

    # -- plumbing --------------------------------------------------------------------

    def _open(self) -> None:
        """(Re)build the links: at first use, and in a child after fork()."""
        self._generation = fork_generation()
        self._seq = itertools.count(1)  # one sequence for all links: replies never collide
        self._context: zmq.Context[Any] = zmq.Context()
        self._identity = secrets.token_bytes(8)
        self._limits = Limits()
        self._admin = self._make_link(self.target.admin_plan())
        self._links: dict[int, ZmqLink | StreamLink] = {}
        bootstrap = ClientCore(ClusterMap(1, ("",), self.target.admin_endpoint), max_message=DEFAULT_MAX_MESSAGE)
        self.core = bootstrap
        self.core = ClientCore(self._fetch_map(), max_message=self._limits.max_message)

    def _fetch_map(self) -> ClusterMap:
        """Ask the coordinator (or router) for the cluster map; fall back on the manifest."""
        try:
            info = self._exchange(self._admin, self.core.admin(Op.CLUSTER_MAP), min(self.timeout, 5.0))
        except Timeout:
            return self.target.fallback_map()
        cluster_map, max_message = map_from_answer(info)
        self._limits = Limits(max_message=max_message)
        return cluster_map

    def _link_for(self, target: int) -> ZmqLink | StreamLink:
        if target == ADMIN:
            return self._admin
        link = self._links.get(target)
        if link is None:
            link = self._links[target] = self._make_link(self.target.link_plan(self.core.map, target))
        return link

    def _make_link(self, plan: LinkPlan) -> ZmqLink | StreamLink:
        if plan.kind == "stream":
            return StreamLink(plan.address, self._limits, self.timeout)
        return ZmqLink(self._context, plan.address, self._identity, self._limits, plan.tag, self.target.keys)

    def _exchange(self, link: ZmqLink | StreamLink, call: Call, timeout: float) -> Any:
        seq = next(self._seq)
        reply = link.exchange(self.core.encode(call, seq), seq, timeout)
        return self.core.interpret(reply, call)

    def _check_usable(self) -> None:
        if self._closed:
            raise ClusterUnavailable("the client is closed")
        if self._generation != fork_generation():
            self._open()  # a forked child: fresh links, the parent's are left alone

    def run(self, call: Call) -> Any:
        """Send one call and return its decoded result."""
        with self._lock:
            self._check_usable()
            try:
                return self._exchange(self._link_for(call.target), call, call.timeout or self.timeout)
            except StaleEpoch:
                self._refresh()
                self.core.reroute(call)
            except ConnectionLost:
                if call.op not in READ_OPS:
                    raise  # a write's outcome is unknown: the caller decides
            return self._exchange(self._link_for(call.target), call, call.timeout or self.timeout)

    def _refresh(self) -> None:
        """The cluster map changed (a resize): fetch it and rebuild the shard links."""
        for link in self._links.values():
            link.close()
        self._links.clear()
        self.core.map = self._fetch_map()

    def run_many(self, calls: list[Call]) -> list[Any]:
        """Send every call, then read every answer: each call's result, or the KVError it
        raised. The calls go to different peers, which serve them side by side."""
        if len({call.target for call in calls}) != len(calls):
            return [self._outcome(call) for call in calls]  # one peer twice: one after the other
        with self._lock:
            self._check_usable()
            sent: list[tuple[Call, ZmqLink | StreamLink, int, float, KVError | None]] = []
            for call in calls:
                link = self._link_for(call.target)
                seq = next(self._seq)
                deadline = time.monotonic() + (call.timeout or self.timeout)
                try:
                    link.send(self.core.encode(call, seq), deadline)
                    sent.append((call, link, seq, deadline, None))
                except KVError as exc:
                    sent.append((call, link, seq, deadline, exc))
            outcomes: list[Any] = []
            for call, link, seq, deadline, error in sent:
                outcome: Any = error
                if error is None:
                    try:
                        outcome = self.core.interpret(link.receive(seq, deadline, call.timeout or self.timeout), call)
                    except ConnectionLost as exc:
                        outcome = self._read_again(call) if call.op in READ_OPS else exc
                    except KVError as exc:
                        outcome = exc
                outcomes.append(outcome)
            if any(isinstance(outcome, StaleEpoch) for outcome in outcomes):
                self._refresh()  # the plan routes those parts again with the new map
            return outcomes

    def _outcome(self, call: Call) -> Any:
        try:
            return self.run(call)
        except KVError as exc:
            return exc

    def _read_again(self, call: Call) -> Any:
        try:
            return self._exchange(self._link_for(call.target), call, call.timeout or self.timeout)
        except KVError as exc:
            return exc

    def notify(self, calls: list[Call]) -> None:
        """Send calls without waiting for their answers (which are dropped when they come)."""
        with self._lock:
            self._check_usable()
            for call in calls:
                link = self._link_for(call.target)
                with contextlib.suppress(KVError):  # a notice is advice: nothing depends on it
                    link.send(self.core.encode(call, next(self._seq)), time.monotonic() + NOTICE_TIMEOUT)

    def drive(self, plan: Generator[Step, list[Any], R]) -> R:
        """Run a batch plan (client/batches.py): each step's calls go out together."""
        try:
            step = next(plan)
            while True:
                if isinstance(step, Notice):
                    self.notify(step)
                    step = plan.send([])
                else:
                    step = plan.send(self.run_many(step))
        except StopIteration as done:
            result: R = done.value
            return result

    # -- administration --------------------------------------------------------------

    def namespace(self, name: str) -> Namespace:
        """A proxy for namespace `name`; NamespaceNotFound if it does not exist."""
        self.run(self.core.admin(Op.NS_STATS, name))
        return Namespace(self, name)

    def create_namespace(self, name: str, *, max_keys: int = 0, max_value_bytes: int = 0) -> Namespace:
        """Create a namespace (0: no limit); NamespaceExists if it does."""
        self.core.namespace_name(name)
        self.run(self.core.admin(Op.NS_CREATE, name, max_keys, max_value_bytes))
        return Namespace(self, name)

    def update_namespace(self, name: str, *, max_keys: int | None = None, max_value_bytes: int | None = None) -> None:
        self.run(self.core.admin(Op.NS_UPDATE, name, max_keys, max_value_bytes))

    def delete_namespace(self, name: str) -> None:
        self.run(self.core.admin(Op.NS_DELETE, name))

    def namespaces(self) -> list[str]:
        return list(self.run(self.core.admin(Op.NS_LIST)))

    def stats(self) -> dict[str, Any]:
        """The object `kvcluster status --json` prints."""
        return dict(self.run(self.core.admin(Op.CLUSTER_STATS)))

    def save_snapshot(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> dict[str, Any]:
        """Write a snapshot of the whole cluster to `path` (a file on the cluster's host):
        exactly the permanent writes with timestamp <= one cut across every shard, taken
        while writes go on. Returns {path, cut, rows, size, seconds, fence_ms}."""
        return dict(self.run(snapshots.save_call(self.core, path, None, timeout or max(self.timeout, SAVE_TIMEOUT))))

    def load_snapshot(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write a snapshot's keys into this cluster (its namespaces are created where
        missing; other keys are left alone). A damaged or foreign file is refused with
        SnapshotError before anything is written. Returns {rows, loaded, failed, ...}."""
        return self.drive(snapshots.load_snapshot(self.core, path, self.timeout))

    def set_autosave(self, interval: float, pattern: str, *, namespace: str | None = None, keep: int = 0) -> None:
        """Snapshot every `interval` seconds to `pattern` ({ts}: the cut, {ns}: the
        namespace; relative to the data dir), keeping the newest `keep` files (0: all).
        One task per namespace (None: the whole cluster): this replaces the one before."""
        self.run(self.core.admin(Op.AUTOSAVE_SET, namespace, interval, pattern, keep))

    def remove_autosave(self, namespace: str | None = None) -> None:
        self.run(self.core.admin(Op.AUTOSAVE_SET, namespace, 0, "-", 0))

    def autosave_tasks(self) -> list[dict[str, Any]]:
        return list(self.run(self.core.admin(Op.AUTOSAVE_LIST)))

    def rotate_journals(self) -> None:
        """Rotate the journal of every shard now."""
        self.run(self.core.admin(Op.ROTATE))

    def resize(self, shards: int, *, timeout: float | None = None) -> dict[str, Any]:
        """Grow the cluster to `shards` shards, online: only the keys whose shard changes
        move, and reads and writes go on meanwhile. Returns {from, to, moved, seconds}.
        InvalidRequest unless `shards` is more than the cluster has; ClusterUnavailable
        if another resize runs, or this one was rolled back (nothing changed: retry)."""
        result = dict(self.run(self.core.resize(shards, timeout or max(self.timeout, RESIZE_TIMEOUT))))
        with self._lock:
            self._refresh()  # route with the new map from now on
        return result

    def shutdown(self) -> None:
        """Stop the whole cluster (what `kvcluster stop` does)."""
        self.run(self.core.admin(Op.SHUTDOWN))

    def ping(self) -> dict[str, Any]:
        return dict(self.run(self.core.admin(Op.PING)))

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._generation == fork_generation():
                for link in [*self._links.values(), self._admin]:
                    link.close()
                self._context.destroy(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled, a client is its address: the copy connects in its own process."""
        return (Client._restore, (self.target.address, self.timeout, self.target.key_paths))

    @staticmethod
    def _restore(address: str, timeout: float, key_paths: tuple[str, str] | None = None) -> Client:
        key, server_key = key_paths or (None, None)
        return Client(address, timeout=timeout, key=key, server_key=server_key)
