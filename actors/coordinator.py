"""The coordinator process: the cluster's manifest, its shards, and its administration.

It never touches shard data. It starts (or adopts) the shards and restarts any that
dies, keeps the namespace registry and the key quotas, and answers admin requests.
Its loop only dispatches: poll the admin socket, the shard links and the shards'
pidfds, run what is due, repeat.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import zmq

from kvcluster import curve
from kvcluster.actors.autosave import Autosaver
from kvcluster.actors.decisions import DecisionLog
from kvcluster.actors.links import ShardLinks
from kvcluster.actors.namespaces import NamespaceRegistry
from kvcluster.actors.quota import QuotaBook, QuotaBroker
from kvcluster.actors.resize import Resizer
from kvcluster.actors.shard import SPIN, ShardConfig, run_shard
from kvcluster.actors.snapshots import SnapshotJob, Snapshotter
from kvcluster.actors.stats import ProcessStats, status_object
from kvcluster.actors.streams import StreamConnection, StreamServer
from kvcluster.actors.supervision import MAX_RESTART_DELAY, ActorSlot
from kvcluster.codec import Limits, Op, Reply, Request, decode_request, encode_error, encode_reply, request_seq
from kvcluster.config import Durability
from kvcluster.datadir import DataDir, adopt_retention
from kvcluster.errors import ClusterUnavailable, InvalidRequest, KVError
from kvcluster.process import StopSignal, log_to_file
from kvcluster.router.clustermap import ClusterMap
from kvcluster.router.proxy import RouterConfig, run_router

if TYPE_CHECKING:
    from kvcluster.resp.gateway import GatewayConfig

__all__ = ["CoordinatorConfig", "run_coordinator"]

log = logging.getLogger("kvcluster.coordinator")

TXN_UPKEEP_INTERVAL: Final = 1.0  # seconds between pushes of commit decisions not yet applied
ADOPT_TIMEOUT: Final = 3.0  # seconds a running shard has to answer before it is replaced
STOP_TIMEOUT: Final = 10.0  # seconds shards have to stop before they are killed
Envelope = list[bytes] | StreamConnection  # who asked: ZeroMQ routing frames, or a local stream


@dataclass(frozen=True)
class CoordinatorConfig:
    data_dir: str
    shards: int
    durability: str
    buffer_size: int
    max_message: int
    max_namespaces: int
    listen: str | None = None  # serve remote clients through a router process at this address
    curve: bool = False  # ... which lets in only clients with allowed CURVE keys (kvcluster.curve)
    retention: dict[str, Any] | None = None  # archive limits named at start (the others: as recorded)
    max_restart_delay: float = MAX_RESTART_DELAY  # cap on the crash-loop backoff, seconds
    resp: str | None = None  # serve the Redis protocol through a gateway process at this host:port


class Coordinator:
    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.data = DataDir.at(config.data_dir)
        self.data.prepare()
        self.manifest = self._load_manifest()
        shards = self.manifest["shards"]
        self.limits = Limits(max_message=config.max_message)
        self.registry = NamespaceRegistry(self.data, self.manifest, shards)
        self.quota = QuotaBook(shards)
        for name, (max_keys, _max_value) in self.registry.active().items():
            self.quota.configure(name, max_keys)
        self.map = ClusterMap(
            self.manifest["epoch"],
            tuple(self.manifest["endpoints"]),
            self.data.endpoint("coordinator"),
            tuple(self.manifest["streams"]),
        )
        self.slots = [
            ActorSlot(
                self.data.shard_name(i),
                run_shard,
                ShardConfig(
                    config.data_dir,
                    i,
                    self.map.epoch,
                    endpoint,
                    self.map.streams[i],
                    self.map.coordinator,
                    self.manifest["durability"],
                    config.buffer_size,
                    config.max_message,
                    SPIN,
                    retention=self.manifest["retention"],
                ),
                self.data.run,
                max_restart_delay=config.max_restart_delay,
            )
            for i, endpoint in enumerate(self.map.endpoints)
        ]
        self.context: zmq.Context[Any] = zmq.Context()
        self.admin = self.context.socket(zmq.ROUTER)
        self.admin.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.admin.setsockopt(zmq.MAXMSGSIZE, config.max_message)
        self.admin.setsockopt(zmq.LINGER, 0)
        self.links = ShardLinks(self.context, list(self.map.endpoints), self.limits)
        self.stats = ProcessStats()
        self.router: ActorSlot[RouterConfig] | None = None
        if config.listen:
            router_config = RouterConfig(
                config.data_dir,
                config.listen,
                self.map.coordinator,
                self.map.endpoints,
                config.max_message,
                config.curve,
            )
            if config.curve:
                curve.server_keys(config.data_dir)  # made now: `start` can tell where the public key is
            self.router = ActorSlot(
                "router", run_router, router_config, self.data.run, max_restart_delay=config.max_restart_delay
            )
        self.resp: ActorSlot[GatewayConfig] | None = None
        if config.resp:
            # Imported here: the gateway (an asyncio server and its command table) is
            # not worth loading into every program that imports kvcluster.
            from kvcluster.resp.gateway import GatewayConfig, run_gateway

            self.resp = ActorSlot(
                "resp",
                run_gateway,
                GatewayConfig(config.data_dir, config.resp),
                self.data.run,
                max_restart_delay=config.max_restart_delay,
            )
        # processes that serve clients beside the shards, supervised the same way
        self.services: list[ActorSlot[Any]] = [service for service in (self.router, self.resp) if service is not None]
        self.wakeup = StopSignal(self._request_shutdown)
        self.broker = QuotaBroker(self.quota, self.links, self._live, self._before_release)
        self.decisions = DecisionLog(
            os.path.join(self.data.coordinator_dir, "decisions"), Durability.parse(self.manifest["durability"])
        )
        self.snapshots = Snapshotter(
            self.links, lambda: len(self.slots), self._live, self.decisions, self.registry.active, self.data.run
        )
        self.autosave = Autosaver(
            self.data.root, self.manifest, self.data.write_manifest, self.snapshots, lambda: self.ready
        )
        self.next_upkeep = 0.0
        self.stopping = False
        self.shutdown_requested = False
        self.poller = zmq.Poller()
        self.polled_pidfds: set[int] = set()
        self.streams: StreamServer | None = None  # local clients' fast path, opened by run()
        self.resizer = Resizer(self)  # (finishes a resize a previous coordinator left)
        self.snapshots.blocked = lambda: None if self.resizer.job is None else "the cluster is being resized"

    def _request_shutdown(self) -> None:
        self.shutdown_requested = True

    def _load_manifest(self) -> dict[str, Any]:
        try:
            manifest = self.data.read_manifest()
        except ClusterUnavailable:  # a new cluster
            shards = self.config.shards
            manifest = {
                "shards": shards,
                "epoch": 1,
                "durability": self.config.durability,
                "endpoints": [self.data.endpoint(self.data.shard_name(i)) for i in range(shards)],
                "streams": [self.data.stream(self.data.shard_name(i)) for i in range(shards)],
                "created": time.time_ns() // 1000,
            }
            self.data.write_manifest(manifest)
        if adopt_retention(manifest, self.config.retention):
            self.data.write_manifest(manifest)
        return manifest

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        self.admin.bind(self.map.coordinator)
        self.poller.register(self.admin, zmq.POLLIN)
        for link in self.links.sockets:
            self.poller.register(link, zmq.POLLIN)
        self.poller.register(self.wakeup.fileno(), zmq.POLLIN)
        self.streams = StreamServer(self.data.stream("coordinator"), self.config.max_message, self.poller)
        self._start_shards()
        log.info("coordinator serving %s (pid %d, %d shards)", self.map.coordinator, os.getpid(), len(self.slots))
        while not self.stopping:
            self._poll_once()
            if self.shutdown_requested:
                self._stop_shards()
                self.stopping = True
        self.snapshots.close()
        self.decisions.close()
        if self.streams is not None:
            self.streams.shutdown()
        self.links.close()
        self.admin.close(0)
        self.context.term()

    def _watch_pidfds(self) -> None:
        """Keep the poller on the pidfds of the processes alive now (they change on restarts)."""
        pidfds = {actor.pidfd for actor in self._actors() if actor.pidfd >= 0}
        for pidfd in self.polled_pidfds - pidfds:
            self.poller.unregister(pidfd)
        for pidfd in pidfds - self.polled_pidfds:
            self.poller.register(pidfd, zmq.POLLIN)
        self.polled_pidfds = pidfds

    def _poll_once(self) -> None:
        self._watch_pidfds()
        ready = dict(self.poller.poll(self._timeout_ms()))
        if self.wakeup.fileno() in ready:
            self.wakeup.drain()  # SIGTERM arrived; its handler set the flag
        for i, slot in enumerate(self.slots):
            if slot.pidfd >= 0 and slot.pidfd in ready:
                slot.died()
                self.links.abandon(i)
            if self.links.sockets[i] in ready:
                self.links.receive(i)
        for service in self.services:
            if service.pidfd >= 0 and service.pidfd in ready:
                service.died()
        if self.admin in ready:
            self._serve()
        streams = self.streams
        if streams is not None:
            if streams.listener.fileno() in ready:
                streams.accept()
            for fd in [fd for fd in ready if type(fd) is int and fd in streams.connections]:
                connection = streams.connections[fd]
                if ready[fd] & zmq.POLLOUT:
                    streams.flush(connection)
                if ready[fd] & zmq.POLLIN:
                    for payload in list(streams.read(connection)):
                        self._serve_one(connection, payload)
        self.links.expire()
        self.decisions.tick()
        self.snapshots.tick()
        now = time.monotonic()
        self.autosave.tick(now)
        if now >= self.next_upkeep:
            self.next_upkeep = now + TXN_UPKEEP_INTERVAL
            self._push_decisions()
        self.resizer.tick()  # (before restarts: a shard that died mid-resize may be rolled back)
        for actor in self._actors():
            if actor.restart_at is not None and actor.restart_at <= now and not self.shutdown_requested:
                actor.start()

    def _actors(self) -> list[ActorSlot[Any]]:
        return [*self.slots, *self.services]

    def _timeout_ms(self) -> int:
        if self.shutdown_requested:
            return 0
        restarts = [actor.restart_at for actor in self._actors()]
        flush = self.decisions.flush_due_in()
        now = time.monotonic()
        assembling = self.snapshots.due_in()
        due = [
            self.next_upkeep,
            None if flush is None else now + flush,
            None if assembling is None else now + assembling,
            self.autosave.next_due(),
        ]
        times = [t for t in (self.links.next_deadline(), *restarts, *due) if t is not None]
        if not times:
            return 1000
        return max(0, min(1000, int((min(times) - time.monotonic()) * 1000) + 1))

    def _start_shards(self) -> None:
        """Adopt the shards (and router, gateway) a previous coordinator left running; start the others."""
        for service in self.services:
            pid = service.recorded_pid()
            if pid is not None:
                service.adopt(pid)  # it holds the listening port: a second one could not bind
            else:
                service.start()
        for slot in self.slots:
            pid = slot.recorded_pid()
            if pid is not None:
                slot.adopt(pid)  # ready once it answers the ping
                answer = functools.partial(self._adopted, slot, pid)
                self.links.call(slot.config.shard, Op.PING, [], answer, ADOPT_TIMEOUT)
            else:
                slot.start()

    def _adopted(self, slot: ActorSlot[ShardConfig], pid: int, reply: Reply | None) -> None:
        if (
            reply is not None
            and reply.status == 0
            and isinstance(reply.result, dict)
            and reply.result.get("pid") == pid
        ):
            self._shard_ready(slot.config.shard)
            return
        log.warning("%s (pid %d) did not answer; replacing it", slot.name, pid)
        slot.kill()  # its pidfd fires and the usual restart follows

    def _shard_ready(self, shard: int) -> None:
        """A shard serves: send it the namespaces; its answer reports its key quotas."""
        slot = self.slots[shard]

        def synced(reply: Reply | None) -> None:
            if reply is None or reply.status != 0:
                log.warning("%s did not take the namespace list", slot.name)
                return
            self.quota.report(shard, reply.result)
            slot.ready = True
            for name in self.registry.dropping():
                self._drop_on(shard, name)

        self.links.call(shard, Op.NS_SYNC, [self.registry.active()], synced)

    def _stop_shards(self) -> None:
        """STOP every shard (and the router, gateway), wait for them, and kill what is left at the deadline."""
        for service in self.services:
            service.restart_at = None
            service.terminate()
        for service in self.services:
            if not service.wait(5.0):
                service.kill()
                service.wait(5.0)
        for slot in self.slots:
            slot.restart_at = None
            if slot.pid is not None:
                self.links.call(slot.config.shard, Op.STOP, [], lambda reply: None, STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        for slot in self.slots:
            while slot.pid is not None and time.monotonic() < deadline:
                for i in range(len(self.slots)):
                    self.links.receive(i)
                slot.wait(0.05)
            if slot.pid is not None:
                log.warning("%s did not stop in time; killing it", slot.name)
                slot.kill()
                slot.wait(5.0)

    # -- admin requests --------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            try:
                frames = self.admin.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._serve_one(frames[:-1], frames[-1])

    def _serve_one(self, envelope: Envelope, payload: bytes) -> None:
        try:
            request = decode_request(payload, self.limits.unpack_options())
            self._dispatch(envelope, request)
        except KVError as exc:
            self._reply_error(envelope, request_seq(payload), exc)
        except (TypeError, ValueError, KeyError, IndexError) as exc:  # malformed arguments
            self._reply_error(envelope, request_seq(payload), InvalidRequest(f"bad arguments: {exc}"))

    def _dispatch(self, envelope: Envelope, request: Request) -> None:
        op, args, seq = request.op, request.args, request.seq
        if op is Op.PING:
            self._reply(envelope, seq, {"pid": os.getpid(), "ready": self.ready})
        elif op is Op.CLUSTER_MAP:
            self._reply(
                envelope, seq, {**self.map.to_wire(), "ready": self.ready, "max_message": self.limits.max_message}
            )
        elif op is Op.TXN_DECIDE:
            self._reply(envelope, seq, self.decisions.decide(*_exactly(5, args)))
        elif op in (Op.HELLO, Op.QUOTA_ASK, Op.TXN_STATUS, Op.TXN_FORGET) and not _from_shard(envelope):
            raise InvalidRequest(f"{op.name} comes from shards only")
        elif op is Op.HELLO:
            shard, _pid, report = self._sender(envelope, args[0]), args[1], args[2]
            self.quota.started(shard, report)
            self._reply(envelope, seq, None)
            self._shard_ready(shard)
        elif op is Op.TXN_FORGET:
            self.decisions.applied(*_exactly(2, args))
            self._reply(envelope, seq, None)
        elif op is Op.TXN_STATUS:
            self._reply(envelope, seq, self.decisions.status(*_exactly(2, args)))
        elif op is Op.QUOTA_ASK:
            shard, ns, wanted, report = self._sender(envelope, args[0]), str(args[1]), int(args[2]), args[3]
            self.broker.ask(shard, ns, wanted, report, functools.partial(self._reply, envelope, seq))
        elif op is Op.NS_LIST:
            self._reply(envelope, seq, self.registry.names())
        elif op is Op.NS_CREATE:
            self.registry.create(args[0], args[1], args[2], self.config.max_namespaces)
            self.quota.configure(args[0], args[1])
            self._sync_all(lambda: self._reply(envelope, seq, None))
        elif op is Op.NS_UPDATE:
            if self.registry.update(args[0], args[1], args[2]):
                self.quota.configure(args[0], args[1])
                self._sync_all(lambda: self.broker.reset(args[0], lambda: self._reply(envelope, seq, None)))
            else:
                self._sync_all(lambda: self._reply(envelope, seq, None))
        elif op is Op.RESIZE:
            self.resizer.start(envelope, seq, args)
        elif op is Op.NS_DELETE:
            self.resizer.check_idle("delete a namespace")
            self.registry.start_drop(args[0])
            self.quota.forget(args[0])
            self._sync_all(lambda: self._drop_everywhere(args[0], lambda: self._reply(envelope, seq, None)))
        elif op is Op.NS_STATS:
            self._namespace_stats(envelope, seq, args[0])
        elif op is Op.CLUSTER_STATS:
            self._cluster_stats(envelope, seq)
        elif op is Op.ROTATE:
            self.links.fan_out(
                range(len(self.slots)), Op.ROTATE, [], lambda answers: self._reply(envelope, seq, None), 60.0
            )
        elif op is Op.SNAPSHOT:
            path, namespace = _exactly(2, args)
            if (
                type(path) is not str
                or not os.path.isabs(path)
                or (namespace is not None and type(namespace) is not str)
            ):
                raise InvalidRequest("SNAPSHOT takes [absolute path, namespace | nil]")
            self.autosave.check_target(path)
            done = functools.partial(self._snapshot_taken, envelope, seq)
            self.snapshots.request(SnapshotJob(lambda _cut: path, namespace, done))
        elif op is Op.LOADING:
            path, lease = _exactly(2, args)
            self.autosave.loading(path, lease)
            self._reply(envelope, seq, None)
        elif op is Op.AUTOSAVE_SET:
            namespace, interval, pattern, keep = _exactly(4, args)
            if namespace is not None:
                self.registry.get(namespace)
            self.autosave.configure(namespace, interval, pattern, keep)
            self._reply(envelope, seq, None)
        elif op is Op.AUTOSAVE_LIST:
            self._reply(envelope, seq, self.autosave.listing())
        elif op is Op.SHUTDOWN:
            self._reply(envelope, seq, None)
            self.shutdown_requested = True
        else:
            raise InvalidRequest(f"operation {op.name} goes to a shard, not the coordinator")

    @property
    def ready(self) -> bool:
        return all(slot.ready for slot in self.slots)

    def _reply(self, envelope: Envelope, seq: int, result: Any) -> None:
        self._send(envelope, encode_reply(seq, result))

    def _reply_error(self, envelope: Envelope, seq: int | None, error: KVError) -> None:
        self._send(envelope, encode_error(seq, error))

    def _send(self, envelope: Envelope, payload: bytes) -> None:
        if isinstance(envelope, StreamConnection):
            if self.streams is not None:
                self.streams.send(envelope, payload)  # a no-op if the client has gone
            return
        try:
            self.admin.send_multipart([*envelope, payload], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("reply to %r dropped: %s", envelope, exc)

    # -- transactions ----------------------------------------------------------------

    def _push_decisions(self) -> None:
        """Send commit decisions to the participants that have not confirmed them (their
        client vanished before telling them, or they were down), and purge old aborts."""
        self._push_commits(self.decisions.unapplied(), range(len(self.slots)))
        self.decisions.purge()

    def _push_commits(self, decided: list[tuple[bytes, Any]], shards: Any) -> None:
        wanted = set(shards)
        for txn, decision in decided:
            for shard in sorted(decision.left & wanted):
                if 0 <= shard < len(self.slots) and self.slots[shard].ready:

                    def confirmed(reply: Reply | None, txn: bytes = txn, shard: int = shard) -> None:
                        if reply is not None and reply.status == 0:
                            self.decisions.applied([txn], shard)

                    self.links.call(shard, Op.TXN_COMMIT, [txn, decision.ts], confirmed, TXN_UPKEEP_INTERVAL)

    def _before_release(self, shards: list[int]) -> None:
        """Before shards give back spare quota: every commit decided for them goes first,
        on the same socket, so a delete already acknowledged frees its slot in the count
        they report (else an insert right after it could be told the namespace is full)."""
        committed = [(t, d) for t, d in self.decisions.decisions.items() if d.outcome == "commit" and d.left]
        self._push_commits(committed, shards)

    # -- namespaces and quotas -------------------------------------------------------

    def _sender(self, envelope: Envelope, claimed: Any) -> int:
        """The shard a request names, which must be the shard that sent it."""
        if type(claimed) is not int or not 0 <= claimed < len(self.slots):
            raise InvalidRequest(f"no shard {claimed!r}")
        if not isinstance(envelope, StreamConnection) and envelope[0] != self.data.shard_name(claimed).encode():
            raise InvalidRequest(f"shard {claimed} speaks for itself only")
        return claimed

    def _sync_all(self, then: Any) -> None:
        """Send every live shard the namespace list; `then()` when all answered."""

        def synced(answers: dict[int, Reply | None]) -> None:
            self.broker.record(answers)
            then()

        self.links.fan_out(self._live(), Op.NS_SYNC, [self.registry.active()], synced)

    def _snapshot_taken(self, envelope: Envelope, seq: int, summary: Any, error: KVError | None) -> None:
        if error is not None:
            self._reply_error(envelope, seq, error)
        else:
            self._reply(envelope, seq, summary)

    def _live(self) -> list[int]:
        return [slot.config.shard for slot in self.slots if slot.pid is not None]

    def _serving(self) -> list[int]:
        """Shards that answer now: a process still starting has no socket bound yet, and
        a request sent to it would only wait out its timeout."""
        return [slot.config.shard for slot in self.slots if slot.pid is not None and slot.ready]

    def _drop_on(self, shard: int, name: str, then: Any = None) -> None:
        def dropped(reply: Reply | None) -> None:
            if reply is not None and reply.status == 0:
                self.registry.dropped(name, shard)
            if then is not None:
                then()

        self.links.call(shard, Op.NS_DROP, [name], dropped, 60.0)

    def _drop_everywhere(self, name: str, then: Any) -> None:
        live = self._live()
        remaining = set(live)
        if not remaining:
            then()
        for shard in live:

            def one_done(shard: int = shard) -> None:
                remaining.discard(shard)
                if not remaining:
                    then()

            self._drop_on(shard, name, one_done)

    # -- statistics ------------------------------------------------------------------

    def _cluster_stats(self, envelope: Envelope, seq: int) -> None:
        def gathered(answers: dict[int, Reply | None]) -> None:
            shard_info = {
                shard: reply.result
                for shard, reply in answers.items()
                if reply is not None and reply.status == 0 and isinstance(reply.result, dict)
            }
            shards = [
                {
                    "id": slot.config.shard,
                    "pid": slot.pid,
                    "endpoint": slot.config.endpoint,
                    "ready": slot.ready,
                    "restarts": slot.restarts,
                }
                for slot in self.slots
            ]
            status = status_object(self.stats, shards, shard_info, self.registry.active())
            status.update(
                data_dir=self.data.root,
                address=self.map.coordinator,
                epoch=self.map.epoch,
                durability=self.manifest["durability"],
                retention=self.manifest["retention"],
                ready=self.ready,
                resize=self.resizer.describe(),
            )
            status["coordinator"]["commits_unapplied"] = self.decisions.commits_kept()
            status["router"] = self._service_status(self.router, self.config.listen, self.router is not None)
            resp_serving = self.resp is not None and _gateway_address(self.data.root) == self.config.resp
            status["resp"] = self._service_status(self.resp, self.config.resp, resp_serving)
            self._reply(envelope, seq, status)

        self.links.fan_out(self._serving(), Op.SHARD_STATS, [], gathered, 2.0)

    def _service_status(self, slot: ActorSlot[Any] | None, address: str | None, serving: bool) -> Any:
        """The router's or the gateway's line of the status: None when not configured."""
        if slot is None:
            return None
        return {
            "pid": slot.pid,
            "address": address,
            "serving": bool(serving and slot.pid is not None),
            "restarts": slot.restarts,
            **self.stats.of(slot.pid),
        }

    def _namespace_stats(self, envelope: Envelope, seq: int, name: Any) -> None:
        entry = self.registry.get(name)

        def counted(answers: dict[int, Reply | None]) -> None:
            keys = sum(r.result for r in answers.values() if r is not None and r.status == 0 and type(r.result) is int)
            self._reply(
                envelope,
                seq,
                {
                    "name": name,
                    "keys": keys,
                    "max_keys": entry["max_keys"],
                    "max_value_bytes": entry["max_value_bytes"],
                },
            )

        # COUNT is a data operation: a shard answers it only under the current map epoch
        self.links.fan_out(self._serving(), Op.COUNT, [name.encode()], counted, 2.0, self.map.epoch)


def _from_shard(envelope: Envelope) -> bool:
    """Shards speak to the coordinator over ZeroMQ only, with routing ids `shard-NNN`."""
    return not isinstance(envelope, StreamConnection) and envelope[0].startswith(b"shard-")


def _exactly(count: int, args: list[Any]) -> list[Any]:
    if len(args) != count:
        raise InvalidRequest(f"expected {count} arguments, got {len(args)}")
    return args


def run_coordinator(config: CoordinatorConfig) -> None:
    """Entry point of the coordinator process (started with the spawn method)."""
    DataDir.at(config.data_dir).prepare()
    log_to_file(config.data_dir, "coordinator")
    try:
        Coordinator(config).run()
    except Exception:
        log.exception("coordinator failed")
        raise


def _gateway_address(root: str) -> str | None:
    """The address the RESP gateway reports serving (imported only when one is configured)."""
    from kvcluster.resp.gateway import ready_address

    return ready_address(root)
