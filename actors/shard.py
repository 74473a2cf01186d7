"""The shard process: one journal, one ROUTER socket, one loop.

The loop only dispatches: wait for messages (or the next timer), drain everything
waiting, apply it under one journal group — one flush for the whole drained group
when durability asks for it — then send the replies. Batching and group commit come
from the loop, not from the callers. Requests that wait for namespace quota are
parked, and every later request for the same namespace queues behind them, so a
client's pipeline is answered in order.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

import zmq

from kvcluster.actors.lock_waits import LockWaits
from kvcluster.actors.shard_batches import REPLY_SLACK
from kvcluster.actors.shard_moves import MOVER_PREFIX, Mover, install, purge_foreign
from kvcluster.actors.shard_snapshots import (
    PartWriterChild,
    SnapshotFence,
    fork_part_writer,
    parse_cut,
    read_part_result,
)
from kvcluster.actors.shard_state import PARKED, ShardState
from kvcluster.actors.spin_poller import SpinPoller
from kvcluster.actors.streams import StreamConnection, StreamServer
from kvcluster.codec import (
    DATA_OPS,
    Limits,
    Op,
    Reply,
    Request,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
    request_seq,
)
from kvcluster.config import Durability, Retention
from kvcluster.datadir import DataDir
from kvcluster.errors import ClusterUnavailable, InvalidRequest, KVError, StorageError
from kvcluster.failpoints import failpoint
from kvcluster.journal import VersionedStore
from kvcluster.process import StopSignal, log_to_file

__all__ = ["COORDINATOR_ID", "ShardConfig", "run_shard"]

log = logging.getLogger("kvcluster.shard")

COORDINATOR_ID: Final = b"coordinator"  # the routing id the coordinator's sockets use
GROUP_WAIT: Final = 50e-6  # seconds an `always` group waits for other clients' writes (see _gather)
GATHER_MISSES: Final = 4
GATHER_PROBE: Final = 16
MAX_DRAIN: Final = 512  # requests applied under one group (one flush) at most
MAX_ENVELOPE: Final = 4  # routing frames in front of a payload (router hops)
DEDUP_ENTRIES: Final = 16384  # recent write replies kept for re-delivered requests
WRITE_OPS: Final = frozenset(
    {
        *(Op.SET, Op.UPDATE, Op.CONSUME, Op.DELETE),
        *(Op.MSET, Op.MDELETE, Op.MCONSUME, Op.ATOMIC),
        *(Op.TXN_PREPARE, Op.TXN_COMMIT, Op.TXN_ABORT),
    }
)
# Requests whose first argument is a namespace: they queue behind writes parked for its quota.
NS_OPS: Final = frozenset(
    {Op.GET, Op.EXISTS, Op.SET, Op.UPDATE, Op.CONSUME, Op.DELETE, Op.MGET, Op.MSET, Op.MDELETE, Op.MCONSUME}
    | {Op.ATOMIC, Op.TXN_PREPARE}
)
LOCKED_OPS: Final = (NS_OPS - {Op.TXN_PREPARE}) | {Op.SCAN}  # these wait for a prepared key's outcome
RESOLVING_OPS: Final = frozenset({Op.TXN_COMMIT, Op.TXN_ABORT})
MOVE_OPS: Final = frozenset({Op.MOVE_START, Op.MOVE_SWITCH, Op.MOVE_ABORT, Op.MOVE_INSTALL})  # a resize
SNAPSHOT_OPS: Final = frozenset({Op.SNAP_FENCE, Op.SNAP_CUT, Op.SNAP_ABORT})
FAST_OPS: Final = DATA_OPS | {Op.MGET, Op.MSET, Op.MDELETE, Op.MCONSUME}  # see _serve
COORDINATOR_OPS: Final = frozenset({Op.NS_SYNC, Op.QUOTA_RELEASE, Op.NS_DROP, Op.ROTATE, Op.STOP}) | SNAPSHOT_OPS
QUOTA_ANSWER_TIMEOUT: Final = 2.0  # seconds a parked write waits for the coordinator
TXN_CHECK_INTERVAL: Final = 0.25  # seconds between looks for transactions left in doubt
STATUS_RETRY: Final = 1.0  # seconds before asking the coordinator about one transaction again
FORGET_DELAY: Final = 0.05  # seconds applied commits wait to be reported together
FORGET_BATCH: Final = 1024  # ... or this many of them
# After replying, a shard keeps polling this long before it blocks: waking a sleeping
# process costs ~15 us on a VM, more than a whole request. It yields the CPU between
# polls, so a client (or another shard) that needs the core gets it: measured, spinning
# without yielding made 2 shards and a client on 2 cores 3x slower; yielding, never
# slower than sleeping at once. The polling is an epoll, not zmq_poll (spin_poller.py).
SPIN: Final = float(os.environ.get("KVCLUSTER_SPIN_US", "50")) * 1e-6 if (os.cpu_count() or 1) > 1 else 0.0
_POLLIN: Final = int(zmq.POLLIN)  # plain ints: zmq's flag enums cost a Python call per test
_POLLOUT: Final = int(zmq.POLLOUT)


@dataclass(frozen=True)
class ShardConfig:
    data_dir: str
    shard: int
    epoch: int
    endpoint: str  # the ZeroMQ ROUTER socket
    stream: str  # the Unix socket of the local fast path (actors/streams.py)
    coordinator: str
    durability: str
    buffer_size: int
    max_message: int
    spin: float = 0.0  # seconds to keep polling after a reply before sleeping (see SPIN)
    retention: dict[str, Any] | None = None  # which archives to keep (Retention.to_dict); None: defaults


Envelope = list[bytes] | StreamConnection  # where a reply goes: ZeroMQ routing frames, or a stream


@dataclass(slots=True)
class _Outgoing:
    envelope: Envelope
    request: Request | None
    reply: bytes


class _Parked:
    """Requests waiting for one namespace's quota answer, in arrival order."""

    def __init__(self) -> None:
        self.queue: deque[tuple[Envelope, Request]] = deque()
        self.since = time.monotonic()


class ShardProcess:
    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        self.stopping = False
        self.limits = Limits(max_message=config.max_message)
        self.unpack_options = self.limits.unpack_options()
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.MAXMSGSIZE, config.max_message)
        self.router.setsockopt(zmq.LINGER, 0)
        self.coordinator = self.context.socket(zmq.DEALER)
        self.coordinator.setsockopt(zmq.ROUTING_ID, DataDir.at(config.data_dir).shard_name(config.shard).encode())
        self.coordinator.setsockopt(zmq.MAXMSGSIZE, config.max_message)
        self.coordinator.setsockopt(zmq.LINGER, 0)
        self.store = VersionedStore.open(
            DataDir.at(config.data_dir).shard_dir(config.shard),
            durability=Durability.parse(config.durability),
            buffer_size=config.buffer_size,
            retention=Retention.from_dict(config.retention),
        )
        self.state = ShardState(config.shard, self.store, config.epoch, self._ask_quota)
        self.state.reply_budget = config.max_message - REPLY_SLACK
        self.state.waiting = self._waiting_count
        self.grouping = Durability.parse(config.durability) is Durability.ALWAYS  # one flush per drained group
        self.groups = 0  # groups that waited, or could have waited, for more writes (_gather)
        self.gather_misses = 0
        self.parked: dict[bytes, _Parked] = {}
        self.asks: dict[int, bytes] = {}  # seq of a QUOTA_ASK -> namespace
        self.waits: LockWaits[Envelope] = LockWaits()
        self.statuses: dict[int, bytes] = {}  # seq of a TXN_STATUS -> transaction
        self.asked: dict[bytes, float] = {}  # transaction -> when the coordinator was last asked
        self.next_txn_check = 0.0
        self.applied: list[bytes] = []  # transactions committed here, not yet reported (TXN_FORGET)
        self.forget_due = 0.0
        # Random start: an answer meant for the process this one replaces never matches.
        self.seq = int.from_bytes(os.urandom(4), "big")
        self.hello_seq = 0
        self.recent: OrderedDict[tuple[bytes, int], bytes] = OrderedDict()
        self.poller = SpinPoller()
        self.fence = SnapshotFence()
        self.streams = StreamServer(config.stream, config.max_message, self.poller)
        self.wakeup = StopSignal(self._stop)
        self.moves = Mover(
            config.shard, self.store, self.context, self.poller, self._send, lambda: self.state.locks, self.limits
        )

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        self.router.bind(self.config.endpoint)
        self.coordinator.connect(self.config.coordinator)
        manifest = DataDir.at(self.config.data_dir).read_manifest()
        namespaces = manifest["namespaces"]
        self._adopt_manifest_shards(manifest)
        self.state.sync_namespaces({n: [c["max_keys"], c["max_value_bytes"]] for n, c in namespaces.items()})
        self._send_hello()
        poller = self.poller
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.coordinator, zmq.POLLIN)
        poller.register(self.wakeup.fileno(), zmq.POLLIN)
        listener = self.streams.listener.fileno()
        connections = self.streams.connections
        log.info("shard %d serving %s (pid %d)", self.config.shard, self.config.endpoint, os.getpid())
        spun: list[tuple[Any, int]] | None = None
        while not self.stopping:
            incoming: list[tuple[Envelope, bytes]] = []
            ready = spun if spun is not None else poller.poll(self._poll_timeout_ms())
            spun = None
            for item, events in ready:
                connection = connections.get(item)  # first: the requests of local clients
                if connection is not None:
                    if events & _POLLOUT:
                        self.streams.flush(connection)
                    if events & _POLLIN:
                        incoming.extend([(connection, payload) for payload in self.streams.read(connection)])
                elif item is self.router:
                    self._drain_router(incoming)
                elif item is self.coordinator:
                    self._coordinator_replies()
                elif item == listener:
                    self.streams.accept()
                elif item == self.wakeup.fileno():
                    self.wakeup.drain()  # SIGTERM arrived; its handler set `stopping`
                elif self.moves.owns(item):
                    self._move_progress(self.moves.receive(item))
                elif item in self.fence.writers:
                    self._part_written(self.fence.writers.pop(item))
            if incoming:
                self._serve(incoming)
                if self.config.spin:
                    spun = poller.spin(self.config.spin, connections)
            if self.moves.active:
                self._move_progress(self.moves.tick())
            if self.parked:
                self._expire_parked()
            if self.fence.expired(time.monotonic()):
                log.warning("snapshot %s: no cut came; writes go on", self.fence.fenced)
                self._lift_fence()
            if self.state.transactions:
                self._check_transactions()
            if self.waits.queues:
                self._expire_waits()
            if self.applied and time.monotonic() >= self.forget_due:
                self._send_forgets()
            self.store.tick()
        self.close()

    def _waiting_count(self) -> int:
        return len(self.waits)

    def _stop(self) -> None:
        self.stopping = True

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            self.streams.shutdown()
            self.poller.close()
            self.router.close(0)
            self.coordinator.close(0)
            self.context.term()
        log.info("shard %d stopped", self.config.shard)

    def _poll_timeout_ms(self) -> int:
        if self.stopping:
            return 0
        due = self.store.flush_due_in()
        waits = [due] if due is not None else []
        if self.parked:
            waits.append(0.05)
        if self.moves.active:
            waits.append(0.0 if self.moves.scanning() else 0.005 if self.moves.busy() else 0.25)
        if self.fence.fenced is not None:
            waits.append(max(0.0, self.fence.until - time.monotonic()))
        if self.state.transactions or self.waits.queues:
            waits.append(TXN_CHECK_INTERVAL)
        if self.applied:
            waits.append(max(0.0, self.forget_due - time.monotonic()))
        return 1000 if not waits else max(0, int(min(waits) * 1000) + 1)

    # -- serving ---------------------------------------------------------------------

    def _drain_router(self, incoming: list[tuple[Envelope, bytes]]) -> None:
        """Take every message waiting on the ROUTER socket (up to MAX_DRAIN)."""
        router = self.router
        for _ in range(MAX_DRAIN):
            frames = router.recv_multipart(zmq.NOBLOCK)
            if not 2 <= len(frames) <= MAX_ENVELOPE + 1:
                self._send(frames[:1], encode_error(None, InvalidRequest("bad routing frames")))
            else:
                incoming.append((frames[:-1], frames[-1]))
            if not cast(int, router.get(zmq.EVENTS)) & _POLLIN:
                return

    def _serve(self, incoming: list[tuple[Envelope, bytes]]) -> None:
        """Apply everything that arrived as one journal group, then reply to all of it."""
        replies: list[_Outgoing] = []

        def apply() -> None:
            quiet = self._quiet()
            handle = self.state.handle
            done = 0
            while done < len(incoming):
                first, done = done, len(incoming)
                for envelope, payload in incoming[first:]:
                    quiet = self._apply_payload(envelope, payload, quiet, handle, replies)
                if self.grouping and self.store.unflushed:
                    self._gather(incoming)  # more writes for the one flush of this group

        self._in_group(apply, replies)

    def _apply_payload(
        self,
        envelope: Envelope,
        payload: bytes,
        quiet: bool,
        handle: Callable[[Request], bytes],
        replies: list[_Outgoing],
    ) -> bool:
        """Decode and apply one request; returns whether the shard is still quiet."""
        try:
            request = decode_request(payload, self.unpack_options)
        except InvalidRequest as exc:
            replies.append(_Outgoing(envelope, None, encode_error(request_seq(payload), exc)))
            return quiet
        if quiet and request.op in FAST_OPS and type(envelope) is not list:
            # What `_apply` comes to for a stream's data request when nothing is
            # fenced, parked, locked or moving: handle it, or park it.
            reply = handle(request)
            if reply is not PARKED:
                replies.append(_Outgoing(envelope, request, reply))
                return True
            self.parked.setdefault(request.args[0], _Parked()).queue.append((envelope, request))
            return False
        self._apply(envelope, request, replies)
        return quiet and self._quiet()

    def _gather(self, incoming: list[tuple[Envelope, bytes]]) -> None:
        """Under `always`, wait up to GROUP_WAIT for requests from the other connected
        clients before the flush: a flush costs far more than the wait (~130 µs of
        msync here), and every write that joins shares it. Only while some connection
        has not sent anything into this group yet."""
        # Connected but idle clients make the wait pointless: after GATHER_MISSES waits
        # in a row that brought nothing, only one group in GATHER_PROBE tries.
        self.groups += 1
        if self.gather_misses >= GATHER_MISSES and self.groups % GATHER_PROBE:
            return
        connections = self.streams.connections
        deadline = time.perf_counter() + GROUP_WAIT
        gathered = False
        while len(incoming) < MAX_DRAIN:
            senders = {id(envelope) for envelope, _payload in incoming}
            remaining = deadline - time.perf_counter()
            if len(connections) <= len(senders) or remaining <= 0:
                break
            ready = self.poller.spin(remaining, connections)
            if not ready:
                break
            for fd, _events in ready:
                connection = connections.get(fd)
                if connection is not None:
                    incoming.extend([(connection, payload) for payload in self.streams.read(connection)])
                    gathered = True
        self.gather_misses = 0 if gathered else self.gather_misses + 1

    def _quiet(self) -> bool:
        """Nothing that holds or reorders data requests is going on."""
        return not (
            self.fence.fenced is not None or self.parked or self.state.locks or self.waits.marked or self.moves.active
        )

    def _in_group(self, apply: Callable[[], None], replies: list[_Outgoing]) -> None:
        """Run `apply` as one journal group, then send `replies` — after its one flush.

        If that flush fails, no write of the group is acknowledged: each gets the error.
        """
        try:
            if self.grouping:
                with self.store.group():
                    apply()
            else:
                apply()  # no flush to share: skip the group's bookkeeping
        except StorageError as exc:
            log.error("journal flush failed: %s", exc)
            for out in replies:
                if out.request is not None and out.request.op in WRITE_OPS:
                    out.reply = encode_error(out.request.seq, exc)
        failpoint("shard.replying")  # applied (and flushed, if due); nothing acknowledged yet
        if len(replies) == 1:  # the usual case: one request came
            self._send(replies[0].envelope, replies[0].reply)
            return
        streams: dict[int, StreamConnection] = {}
        for out in replies:
            if isinstance(out.envelope, StreamConnection):
                self.streams.queue(out.envelope, out.reply)
                streams[id(out.envelope)] = out.envelope
            else:
                self._send(out.envelope, out.reply)
        for connection in streams.values():
            self.streams.flush(connection)

    def _apply(self, envelope: Envelope, request: Request, replies: list[_Outgoing]) -> None:
        """Run one request; its reply joins `replies`, unless it has to wait (for quota,
        or for a prepared transaction's outcome): then it is answered when it runs again."""
        op = request.op
        if op in MOVE_OPS:
            self._move_command(envelope, request, replies)
            return
        if op in COORDINATOR_OPS:
            if isinstance(envelope, StreamConnection) or envelope[0] != COORDINATOR_ID:
                error = InvalidRequest(f"{op.name} is for the coordinator only")
                replies.append(_Outgoing(envelope, request, encode_error(request.seq, error)))
            elif op in SNAPSHOT_OPS:
                self._snapshot_command(envelope, request, replies)
            else:
                replies.append(_Outgoing(envelope, request, self._command(request)))
            return
        if self.fence.fenced is not None and op in WRITE_OPS:
            self.fence.held.append((envelope, request))  # a snapshot's cut is being taken
            return
        ns = request.args[0] if request.args and op in NS_OPS else None
        if isinstance(ns, bytes) and ns in self.parked:
            self.parked[ns].queue.append((envelope, request))  # keep the pipeline's order
            return
        # A stream never delivers a request twice (a client that lost its connection sends
        # again on a new one, with another origin), so only ZeroMQ peers need the check.
        dedup_key = (_origin(envelope), request.seq) if op in WRITE_OPS and type(envelope) is list else None
        if dedup_key is not None and dedup_key in self.recent:
            replies.append(_Outgoing(envelope, request, self.recent[dedup_key]))  # re-delivered: apply once
            return
        if (self.state.locks or self.waits.marked) and op in LOCKED_OPS:
            txn = self.waits.blocker(request, self.state.locks, self.state.transaction_in)
            if txn is not None:
                self.waits.wait(txn, envelope, request)
                return
        if self.moves.active and self.moves.holds(envelope, request):
            return  # its keys are being handed to a new shard (a resize)
        txn = request.args[0] if op in RESOLVING_OPS and request.args else None
        held = txn in self.state.transactions if type(txn) is bytes else False
        reply = self.state.handle(request)
        if reply is PARKED and isinstance(ns, bytes):  # only a write of new keys parks
            self.parked.setdefault(ns, _Parked()).queue.append((envelope, request))
            return
        if dedup_key is not None:
            self.recent[dedup_key] = reply
            if len(self.recent) > DEDUP_ENTRIES:
                self.recent.popitem(last=False)
        replies.append(_Outgoing(envelope, request, reply))
        if held and type(txn) is bytes and txn not in self.state.transactions:  # decided here, now
            if op is Op.TXN_COMMIT and (isinstance(envelope, StreamConnection) or envelope[0] != COORDINATOR_ID):
                self._forget(txn)  # (the coordinator's own pushes are confirmed by their reply)
            self._resume(txn, replies)

    def _resume(self, txn: bytes, replies: list[_Outgoing]) -> None:
        """`txn` was committed or aborted: run the requests that waited for it."""
        for envelope, request in self.waits.release(txn):
            self._apply(envelope, request, replies)

    def _send(self, envelope: Envelope, reply: bytes) -> None:
        if isinstance(envelope, StreamConnection):
            self.streams.send(envelope, reply)
            return
        try:
            self.router.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer went away (EHOSTUNREACH) or cannot take more
            log.debug("reply to %r dropped: %s", envelope, exc)

    # -- snapshots ---------------------------------------------------------------------

    def _snapshot_command(self, envelope: Envelope, request: Request, replies: list[_Outgoing]) -> None:
        """SNAP_FENCE, SNAP_CUT or SNAP_ABORT (see actors/shard_snapshots.py)."""
        try:
            if request.op is Op.SNAP_FENCE:
                if len(request.args) != 1 or type(request.args[0]) is not int:
                    raise InvalidRequest("SNAP_FENCE takes [id]")
                self.fence.fence(request.args[0])
                replies.append(_Outgoing(envelope, request, encode_reply(request.seq, self.store.last_timestamp)))
            elif request.op is Op.SNAP_ABORT:
                if self.fence.fenced is not None and request.args == [self.fence.fenced]:
                    self._release_fenced(replies)
                replies.append(_Outgoing(envelope, request, encode_reply(request.seq, None)))
            else:
                self._snapshot_cut(envelope, request, replies)
        except (KVError, OSError) as exc:
            error = exc if isinstance(exc, KVError) else StorageError(f"snapshot: {exc}")
            replies.append(_Outgoing(envelope, request, encode_error(request.seq, error)))

    def _snapshot_cut(self, envelope: Envelope, request: Request, replies: list[_Outgoing]) -> None:
        snapshot, cut, commits, path, ns = parse_cut(request.args)
        if self.fence.fenced != snapshot:
            raise InvalidRequest(f"snapshot {snapshot} has no fence here (it expired?)")
        for txn, ts in commits:  # decided at or before the cut: they belong in it
            if txn in self.state.transactions:
                self.state.commit(txn, ts)
                self._forget(txn)
                self._resume(txn, replies)
        self.store.observe(cut)  # every write from now on is newer than the cut
        try:
            pid, fd = fork_part_writer(self.store, path, ns)
        finally:
            self._release_fenced(replies)
        self.fence.writers[fd] = PartWriterChild(pid, fd, envelope, request.seq)
        self.poller.register(fd, zmq.POLLIN)

    def _release_fenced(self, replies: list[_Outgoing]) -> None:
        for envelope, request in self.fence.lift():
            self._apply(envelope, request, replies)

    def _lift_fence(self) -> None:
        replies: list[_Outgoing] = []
        self._in_group(lambda: self._release_fenced(replies), replies)

    def _part_written(self, child: PartWriterChild) -> None:
        self.poller.unregister(child.fd)
        result = read_part_result(child)
        if result.error is None:
            reply = encode_reply(child.seq, [result.rows, result.size])
        else:
            log.error("snapshot part failed: %s", result.error)
            reply = encode_error(child.seq, StorageError(f"shard {self.config.shard}: {result.error}"))
        self._send(child.envelope, reply)

    # -- resizing (actors/shard_moves.py) ----------------------------------------------

    def _move_command(self, envelope: Envelope, request: Request, replies: list[_Outgoing]) -> None:
        """MOVE_START / MOVE_SWITCH / MOVE_ABORT from the coordinator; MOVE_INSTALL from an
        old shard sending keys here."""
        sender = b"" if isinstance(envelope, StreamConnection) else envelope[0]
        wanted = MOVER_PREFIX if request.op is Op.MOVE_INSTALL else COORDINATOR_ID
        if not sender.startswith(wanted):
            refusal = InvalidRequest(f"{request.op.name} comes from {wanted.decode()} only")
            replies.append(_Outgoing(envelope, request, encode_error(request.seq, refusal)))
            return
        try:
            if request.op is Op.MOVE_INSTALL:
                result: Any = install(self.store, request.args[0] if len(request.args) == 1 else None)
            elif request.op is Op.MOVE_START:
                if self.moves.start(envelope, request) is None:
                    return  # answered once every moving key is on its new shard
                result = None
            elif request.op is Op.MOVE_SWITCH:
                epoch, shards = request.args
                if type(epoch) is not int or type(shards) is not int or shards < 1:
                    raise InvalidRequest("MOVE_SWITCH takes [epoch, shards]")
                self.state.epoch = max(self.state.epoch, epoch)
                result, held = self.moves.switch(epoch, shards)
                self._rerun(held, replies)
            else:
                self._rerun(self.moves.abort(), replies)
                result = None
        except (KVError, ValueError, TypeError) as exc:
            error = exc if isinstance(exc, KVError) else InvalidRequest(f"bad {request.op.name}: {exc}")
            replies.append(_Outgoing(envelope, request, encode_error(request.seq, error)))
            return
        replies.append(_Outgoing(envelope, request, encode_reply(request.seq, result)))

    def _rerun(self, held: list[tuple[Envelope, Request, float]], replies: list[_Outgoing]) -> None:
        """Requests a freeze held run again: on the new epoch after a switch (those routed
        with the old map get "stale epoch"), as before after a rollback."""
        for envelope, request, _since in held:
            self._apply(envelope, request, replies)

    def _move_progress(self, outcome: str | None) -> None:
        """After the mover did some work: give up on a failed move; answer held requests
        that waited too long."""
        if outcome == "failed":
            log.error("shard %d: the move failed; rolling it back here", self.config.shard)
            replies: list[_Outgoing] = []
            self._in_group(lambda: self._rerun(self.moves.abort(), replies), replies)
            return
        error = ClusterUnavailable("keys are moving to a new shard (a resize) for too long; retry")
        for envelope, request, _since in self.moves.expired():
            self._send(envelope, encode_error(request.seq, error))

    def _adopt_manifest_shards(self, manifest: dict[str, Any]) -> None:
        """Take the manifest's epoch if newer, and drop the keys a switch gave away while
        this shard was down (a resize it did not see finish)."""
        self.state.epoch = max(self.state.epoch, int(manifest["epoch"]))
        removed = purge_foreign(self.store, self.config.shard, int(manifest["shards"]))
        if removed:
            log.warning("shard %d: removed %d keys that moved to new shards", self.config.shard, removed)

    # -- the coordinator ---------------------------------------------------------------

    def _command(self, request: Request) -> bytes:
        try:
            if request.op is Op.NS_SYNC:
                return encode_reply(request.seq, self.state.sync_namespaces(request.args[0]))
            if request.op is Op.QUOTA_RELEASE:
                ns, shrink = request.args[0].encode(), bool(request.args[1])
                return encode_reply(request.seq, self.state.quotas.release(ns, shrink))
            if request.op is Op.NS_DROP:
                return encode_reply(request.seq, self.state.drop_namespace(request.args[0].encode()))
            if request.op is Op.ROTATE:
                self.store.rotate()
                return encode_reply(request.seq, None)
            self.stopping = True  # Op.STOP
            return encode_reply(request.seq, None)
        except (KVError, AttributeError, IndexError, TypeError, ValueError) as exc:
            error = exc if isinstance(exc, KVError) else InvalidRequest(f"bad {request.op.name}: {exc}")
            return encode_error(request.seq, error)

    def _send_hello(self) -> None:
        self.seq += 1
        self.hello_seq = self.seq
        report = self.state.quotas.report(list(self.state.namespaces))
        self.coordinator.send(encode_request(self.seq, 0, Op.HELLO, self.config.shard, os.getpid(), report))

    def _ask_quota(self, ns: bytes, wanted: int) -> None:
        self.seq += 1
        self.asks[self.seq] = ns
        report = self.state.quotas.report([ns])  # what it holds now: the coordinator's book follows
        request = encode_request(self.seq, 0, Op.QUOTA_ASK, self.config.shard, ns.decode(), wanted, report)
        self.coordinator.send(request)

    def _coordinator_replies(self) -> None:
        while True:
            try:
                payload = self.coordinator.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = decode_reply(payload, self.unpack_options)
            except InvalidRequest as exc:
                log.warning("undecodable message from the coordinator: %s", exc)
                continue
            txn = self.statuses.pop(reply.seq, None)
            if txn is not None:
                self._decided(txn, reply.result if reply.status == 0 else None)
                continue
            if reply.seq == self.hello_seq:
                if reply.status == 0 and isinstance(reply.result, dict):
                    self.state.sync_namespaces(reply.result)  # the answer to HELLO: the namespaces
                continue
            ns = self.asks.pop(reply.seq, None)
            if ns is None:
                continue  # the answer to a TXN_FORGET, or a late one
            granted, number = _grant(reply)
            self.state.quotas.granted(ns, granted, number)
            self._release_parked(ns)

    def _release_parked(self, ns: bytes) -> None:
        """Re-run the requests that waited for `ns`'s quota, in order; some may park again."""
        parked = self.parked.pop(ns, None)
        if parked is None:
            return
        replies: list[_Outgoing] = []

        def apply() -> None:
            while parked.queue:
                envelope, request = parked.queue.popleft()
                self._apply(envelope, request, replies)
                if ns in self.parked:  # it waits again; the rest stays queued behind it
                    self.parked[ns].queue.extend(parked.queue)
                    return

        self._in_group(apply, replies)
        self.state.quotas.answered(ns)

    def _expire_parked(self) -> None:
        """Parked writes the coordinator never answered get ClusterUnavailable."""
        now = time.monotonic()
        for ns in [ns for ns, parked in self.parked.items() if now - parked.since > QUOTA_ANSWER_TIMEOUT]:
            parked = self.parked.pop(ns)
            self.state.quotas.granted(ns, 0)
            error = ClusterUnavailable("the coordinator, which hands out namespace quota, did not answer")
            for envelope, request in parked.queue:
                self._send(envelope, encode_error(request.seq, error))

    # -- transactions left in doubt ----------------------------------------------------

    def _check_transactions(self) -> None:
        """Ask the coordinator about prepared transactions past their deadline (their
        client is gone or slow) and those recovered from the journal after a restart."""
        now = time.monotonic()
        if now < self.next_txn_check:
            return
        self.next_txn_check = now + TXN_CHECK_INTERVAL
        wall = time.time_ns() // 1000
        transactions = self.state.transactions
        self.asked = {txn: when for txn, when in self.asked.items() if txn in transactions}
        for txn, transaction in transactions.items():
            if transaction.deadline > wall and not transaction.recovered:
                continue
            if now - self.asked.get(txn, -STATUS_RETRY) < STATUS_RETRY:
                continue
            self.asked[txn] = now
            self.seq += 1
            self.statuses[self.seq] = txn
            self.coordinator.send(encode_request(self.seq, 0, Op.TXN_STATUS, txn, transaction.deadline))

    def _decided(self, txn: bytes, answer: Any) -> None:
        """The coordinator's answer about a transaction in doubt: apply it."""
        if not isinstance(answer, list) or not answer or txn not in self.state.transactions:
            return  # "pending" (its client may still decide), or resolved meanwhile
        replies: list[_Outgoing] = []
        committed = answer[0] == "commit" and len(answer) == 2 and type(answer[1]) is int

        def apply() -> None:
            if committed:
                self.state.commit(txn, answer[1])
            elif answer[0] == "abort":
                self.state.abort(txn)
            else:
                return
            self._resume(txn, replies)

        self._in_group(apply, replies)
        if committed and txn not in self.state.transactions:
            self._forget(txn)

    def _forget(self, txn: bytes) -> None:
        """Note that this shard has applied `txn`'s commit; the coordinator is told in
        batches (TXN_FORGET), and drops a decision once every participant has."""
        if not self.applied:
            self.forget_due = time.monotonic() + FORGET_DELAY
        self.applied.append(txn)
        if len(self.applied) >= FORGET_BATCH:
            self._send_forgets()

    def _send_forgets(self) -> None:
        self.seq += 1  # (its answer is not waited for)
        self.coordinator.send(encode_request(self.seq, 0, Op.TXN_FORGET, self.applied, self.config.shard))
        self.applied = []

    def _expire_waits(self) -> None:
        error = ClusterUnavailable("a key is held by a transaction that was not decided in time; retry")
        for envelope, request in self.waits.expired(time.monotonic()):
            self._send(envelope, encode_error(request.seq, error))


def _grant(reply: Reply) -> tuple[int, int]:
    """The coordinator's answer to a quota ask: (keys granted, grant number)."""
    result = reply.result
    if reply.status == 0 and isinstance(result, list) and len(result) == 2:
        amount, number = result
        if type(amount) is int and type(number) is int and amount >= 0 and number >= 0:
            return amount, number
    return 0, 0


def _origin(envelope: Envelope) -> bytes:
    """Who sent a request, for recognising a re-delivered write."""
    if isinstance(envelope, StreamConnection):
        return b"stream:" + envelope.id
    return b"\0".join(envelope)


def run_shard(config: ShardConfig) -> None:
    """Entry point of a shard process (started with the spawn method)."""
    log_to_file(config.data_dir, DataDir.at(config.data_dir).shard_name(config.shard))
    try:
        ShardProcess(config).run()
    except Exception:
        log.exception("shard %d failed", config.shard)
        raise
