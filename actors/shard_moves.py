"""A shard's side of an online resize (grow only): sending the keys it gives away,
installing the keys it receives, and dropping the keys it no longer owns.

Growing from N to M shards, jump hash moves a key only from an old shard to a new
one (buckets N..M-1). An old shard told MOVE_START copies those keys — raw, with
their own timestamps and scopes — to their new shards over a DEALER socket each
(MOVE_INSTALL, bounded chunks, at most WINDOW in flight per peer), while it keeps
serving them. It then compares its entries with what it has sent (a key's
timestamp names its version: every write gives a new one) and sends what changed,
again, until little is left. Then it freezes the moving keys: requests that touch
one are held (a two-phase prepare is refused at once, "conflict … retry", so a
batch can never wait on a freeze that waits on it), prepared transactions holding
one are let finish, the last differences go out, and once every chunk is
acknowledged the shard answers MOVE_START: ready. The coordinator switches the map
(the commit point) and sends MOVE_SWITCH: the shard takes the new epoch, removes
the keys it gave away (one journal record per namespace) and runs the held
requests again — those routed with the old map now get "stale epoch", and their
clients route them to the new owner. MOVE_ABORT (a rollback) runs them as before.

A shard that starts with a manifest of more shards than it knew removes the keys
it does not own at start (`purge_foreign`): that finishes a switch it missed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Generator
from typing import Any, Final

import zmq

from kvcluster.actors.lock_waits import request_keys
from kvcluster.codec import Limits, Op, Reply, Request, decode_reply, encode_error, encode_reply, encode_request
from kvcluster.errors import ClusterUnavailable, InvalidRequest
from kvcluster.failpoints import failpoint
from kvcluster.journal import VersionedStore
from kvcluster.router.jump import shards_for
from kvcluster.scope import Scope

__all__ = ["MOVER_PREFIX", "Mover", "install", "purge_foreign", "remove_keys"]

log = logging.getLogger("kvcluster.shard")

MOVER_PREFIX: Final = b"mover-"  # routing ids of the sockets old shards send moving keys on
CHUNK_ROWS: Final = 2000  # rows in one MOVE_INSTALL, at most
CHUNK_BYTES: Final = 4 << 20  # ... and bytes of keys and values
WINDOW: Final = 2  # chunks in flight to one new shard
CATCH_UP: Final = 256  # rows left over after a pass: small enough to freeze for
MAX_PASSES: Final = 8  # copy passes before freezing whatever is left
SCAN_SLICE: Final = 1024  # keys compared a loop turn (~1 ms): a pass never stalls the shard long
HOLD_LIMIT: Final = 30.0  # seconds a request is held by a freeze before it gets an error
ACK_TIMEOUT: Final = 30.0  # seconds a chunk may stay unacknowledged before the move fails
_NOT_HELD: Final = frozenset({Op.PING, Op.SHARD_STATS, Op.COUNT, Op.SCAN, Op.TXN_COMMIT, Op.TXN_ABORT})
_SCOPE_CODES: Final = {int(Scope.PERMANENT): Scope.PERMANENT, int(Scope.EPHEMERAL): Scope.EPHEMERAL}

Row = list[Any]  # [ns, key, value or nil, ts, scope]
Held = tuple[Any, Request, float]


class Mover:
    """One old shard's move: the keys sent, the chunks in flight, the requests held."""

    def __init__(
        self,
        shard: int,
        store: VersionedStore,
        context: zmq.Context[Any],
        poller: zmq.Poller,
        send: Callable[[Any, bytes], None],
        locks: Callable[[], dict[bytes, dict[bytes, bytes]]],
        limits: Limits,
    ) -> None:
        self.shard = shard
        self.limits = limits  # of the messages the new shards answer with
        self.unpack_options = limits.unpack_options()
        self.store = store
        self.context = context
        self.poller = poller
        self.send = send  # (envelope, payload): a reply to the coordinator or a client
        self.locks = locks  # the keys prepared transactions hold now
        self._reset()

    def _reset(self) -> None:
        self.active = False
        self.to = 0
        self.epoch = 0  # the epoch the switch brings
        self.sockets: dict[int, zmq.Socket[Any]] = {}  # new shard -> DEALER
        self.by_socket: dict[zmq.Socket[Any], int] = {}
        self.sent: dict[bytes, dict[bytes, tuple[int, int]]] = {}  # ns -> key -> (ts, new shard)
        self.staying: dict[bytes, set[bytes]] = {}  # keys known to stay here
        self.queue: dict[int, list[Row]] = {}
        self.in_flight: dict[int, dict[int, float]] = {}  # new shard -> {seq: sent at}
        self.seq = 0
        self.passes = 0
        self.scan: Generator[None, None, int] | None = None  # the pass under way, a slice a step
        self.scan_frozen = False  # ... begun while the moving keys were frozen
        self.found: int | None = None  # rows the last finished pass queued
        self.found_frozen = False  # ... and whether it was begun frozen
        self.ready = False  # answered ready: `sent` is every key given away
        self.frozen = False
        self.held: list[Held] = []
        self.asker: tuple[Any, int] | None = None  # who sent MOVE_START: answered when ready
        self.moved = 0
        self.rows_sent = 0

    # -- commands from the coordinator -------------------------------------------------

    def start(self, envelope: Any, request: Request) -> bytes | None:
        """MOVE_START [to, epoch, {shard: endpoint}]: answered later (None) when ready."""
        to, epoch, endpoints = request.args
        if type(to) is not int or to <= self.shard or type(epoch) is not int or not isinstance(endpoints, dict):
            raise InvalidRequest("MOVE_START takes [shards, epoch, {shard: endpoint}]")
        if self.active and (to, epoch) != (self.to, self.epoch):
            raise InvalidRequest(f"a move to {self.to} shards is under way here")
        self.asker = (envelope, request.seq)
        if self.active:
            return None  # asked again (a coordinator that restarted): the same move goes on
        self.active, self.to, self.epoch = True, to, epoch
        identity = MOVER_PREFIX + str(self.shard).encode()
        for target, endpoint in endpoints.items():
            socket = self.context.socket(zmq.DEALER)
            socket.setsockopt(zmq.ROUTING_ID, identity)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message)
            socket.connect(endpoint)
            self.sockets[int(target)] = socket
            self.by_socket[socket] = int(target)
            self.in_flight[int(target)] = {}
            self.poller.register(socket, zmq.POLLIN)
        log.info("shard %d: moving keys to shards %s", self.shard, sorted(self.sockets))
        self._begin_pass()
        return None

    def switch(self, epoch: int, shards: int) -> tuple[int, list[Held]]:
        """MOVE_SWITCH: drop what this shard gave away; (keys removed, held requests to run)."""
        failpoint("shard.move_switch")
        if self.ready and shards == self.to:  # what went is known: no need to hash every key
            removed = remove_keys(self.store, {ns: list(sent) for ns, sent in self.sent.items()})
        else:  # a restarted shard told to switch: whatever it does not own goes
            removed = purge_foreign(self.store, self.shard, shards)
        held = self._finish()
        log.info(
            "shard %d: switched; %d keys given away removed, %d held requests rerun", self.shard, removed, len(held)
        )
        return removed, held

    def abort(self) -> list[Held]:
        """MOVE_ABORT: forget the move (the copies on the new shards are thrown away)."""
        if self.active:
            log.info("shard %d: move to %d shards rolled back", self.shard, self.to)
        return self._finish()

    def _finish(self) -> list[Held]:
        for socket in self.sockets.values():
            self.poller.unregister(socket)
            socket.close(0)
        held = self.held
        self._reset()
        return held

    # -- requests while keys move ------------------------------------------------------

    def holds(self, envelope: Any, request: Request) -> bool:
        """Hold `request` (True) if it touches a frozen key, or was routed with the map
        the switch brings (it arrived before the switch did)."""
        if request.epoch == self.epoch and request.op not in _NOT_HELD:
            self.held.append((envelope, request, time.monotonic()))
            return True
        if not self.frozen or request.op in _NOT_HELD or not self._moving(request):
            return False
        if request.op is Op.TXN_PREPARE:  # never wait: the freeze may be waiting for its batch
            error = ClusterUnavailable("conflict: keys are moving to a new shard (a resize); retry")
            self.send(envelope, encode_error(request.seq, error))
            return True
        self.held.append((envelope, request, time.monotonic()))
        return True

    def _moving(self, request: Request) -> bool:
        if request.op is Op.TXN_PREPARE:
            try:
                ns, kind, items = request.args[0], request.args[3], request.args[4]
                keys = [item[0] for item in items] if kind == "set" else list(items)
            except (IndexError, TypeError, KeyError):
                return False
        else:
            touched = request_keys(request)
            if touched is None:
                return False
            ns, keys = touched
        if type(ns) is not bytes or not keys or not all(type(key) is bytes for key in keys):
            return False
        return any(bucket != self.shard for bucket in shards_for(ns, keys, self.to))

    def expired(self) -> list[Held]:
        """Held requests older than HOLD_LIMIT (they are answered with an error)."""
        deadline = time.monotonic() - HOLD_LIMIT
        if not self.held or self.held[0][2] > deadline:
            return []
        out = [held for held in self.held if held[2] <= deadline]
        self.held = [held for held in self.held if held[2] > deadline]
        return out

    # -- copying -----------------------------------------------------------------------

    def tick(self) -> str | None:
        """Send what can be sent, compare a slice; returns "failed" when the move cannot go on."""
        now = time.monotonic()
        for flights in self.in_flight.values():
            if any(now - sent > ACK_TIMEOUT for sent in flights.values()):
                return "failed"
        if self.scan is not None:
            try:
                next(self.scan)
            except StopIteration as done:
                self.scan, self.found, self.found_frozen = None, done.value, self.scan_frozen
            self._send_chunks()
            return None
        self._send_chunks()
        if any(self.queue.values()) or any(self.in_flight.values()):
            return None
        if self.asker is None:
            return None  # ready, and answered: wait for the switch
        if not self.frozen:
            if self.passes < MAX_PASSES and (self.found is None or self.found > CATCH_UP):
                self._begin_pass()
                return None
            self.frozen = True  # from now on, requests on moving keys wait
            log.info("shard %d: frozen the moving keys after %d passes", self.shard, self.passes)
        if self._locked():
            return None  # a prepared transaction holds a moving key: let it finish
        if not self.found_frozen:
            # Ready once a pass begun frozen, with no lock on a moving key (none can be
            # taken while frozen), has had what it found acknowledged: no moving key can
            # change after it.
            self._begin_pass()
            return None
        failpoint("shard.move_ready")
        envelope, seq = self.asker
        self.asker = None
        self.ready = True
        log.info("shard %d: every moving key sent (%d keys, %d passes)", self.shard, self.moved, self.passes)
        self.send(envelope, encode_reply(seq, {"moved": self.moved, "rows_sent": self.rows_sent}))
        return None

    def busy(self) -> bool:
        """True while there is copying to do (the loop should not sleep long)."""
        return self.active and self.asker is not None

    def scanning(self) -> bool:
        """True while a pass is under way: the loop turns without waiting (it yields the
        core between slices, so requests and the other processes go first)."""
        return self.scan is not None

    def _locked(self) -> bool:
        for ns, held in self.locks().items():
            keys = list(held)
            if keys and any(bucket != self.shard for bucket in shards_for(ns, keys, self.to)):
                return True
        return False

    def _begin_pass(self) -> None:
        self.passes += 1
        if self.passes == 1:  # every key is hashed once: a slice at a time
            self.scan, self.scan_frozen, self.found = self._pass(), self.frozen, None
        else:
            self.found, self.found_frozen = self._later_pass(), self.frozen

    def _pass(self) -> Generator[None, None, int]:
        """The first pass: queue every moving key, hashing each key once, a slice of keys a
        step (the shard's loop serves requests between steps); returns how many rows were
        queued. A key written or removed after its slice is caught by a later pass."""
        permanent, ephemeral = self.store.spaces_raw()
        queued = 0
        for entries, scope in ((permanent, int(Scope.PERMANENT)), (ephemeral, int(Scope.EPHEMERAL))):
            for ns in list(entries):
                keys = list(entries.get(ns, ()))
                self.sent.setdefault(ns, {})
                self.staying.setdefault(ns, set())
                for start in range(0, len(keys), SCAN_SLICE):
                    space = entries.get(ns)  # looked up again: the loop ran since the last slice
                    if space is None:
                        break
                    fresh = [key for key in keys[start : start + SCAN_SLICE] if key in space]
                    queued += self._place(ns, fresh, space, scope)
                    yield
        self.moved = sum(map(len, self.sent.values()))
        return queued

    def _later_pass(self) -> int:
        """A pass after the first, at once: only the keys sent are compared, and keys new
        since are found by set difference (C loops; tens of ms for a million keys);
        returns how many rows were queued."""
        permanent, ephemeral = self.store.spaces_raw()
        queued = 0
        for ns in sorted(set(self.sent) | set(permanent) | set(ephemeral)):
            spaces = ((permanent.get(ns, {}), int(Scope.PERMANENT)), (ephemeral.get(ns, {}), int(Scope.EPHEMERAL)))
            sent = self.sent.setdefault(ns, {})
            staying = self.staying.setdefault(ns, set())
            for key, (ts, bucket) in list(sent.items()):
                found = next(((space[key], scope) for space, scope in spaces if key in space), None)
                if found is None:  # removed here since it was sent
                    del sent[key]
                    self.queue.setdefault(bucket, []).append([ns, key, None, 0, int(Scope.PERMANENT)])
                    queued += 1
                elif found[0][1] != ts:
                    (value, now), scope = found
                    sent[key] = (now, bucket)
                    self.queue.setdefault(bucket, []).append([ns, key, value, now, scope])
                    queued += 1
            for space, scope in spaces:
                queued += self._place(ns, list(space.keys() - sent.keys() - staying), space, scope)
        self.moved = sum(map(len, self.sent.values()))
        return queued

    def _place(self, ns: bytes, fresh: list[bytes], space: dict[bytes, tuple[bytes, int]], scope: int) -> int:
        """Hash keys never seen before: remember those that stay, queue those that move;
        returns how many were queued."""
        sent, staying = self.sent[ns], self.staying[ns]
        queued = 0
        for key, bucket in zip(fresh, shards_for(ns, fresh, self.to), strict=True):
            if bucket == self.shard:
                staying.add(key)
                continue
            value, ts = space[key]
            sent[key] = (ts, bucket)
            self.queue.setdefault(bucket, []).append([ns, key, value, ts, scope])
            queued += 1
        return queued

    def _send_chunks(self) -> None:
        for target, rows in self.queue.items():
            flights = self.in_flight[target]
            while rows and len(flights) < WINDOW:
                chunk: list[Row] = []
                size = 0
                while rows and len(chunk) < CHUNK_ROWS and size < CHUNK_BYTES:
                    row = rows.pop()
                    chunk.append(row)
                    size += len(row[1]) + len(row[2] or b"")
                failpoint("shard.move_chunk")
                self.seq += 1
                self.sockets[target].send(encode_request(self.seq, 0, Op.MOVE_INSTALL, chunk), zmq.NOBLOCK)
                flights[self.seq] = time.monotonic()
                self.rows_sent += len(chunk)

    def owns(self, item: Any) -> bool:
        return item in self.by_socket

    def receive(self, socket: zmq.Socket[Any]) -> str | None:
        """Acknowledgements from a new shard; "failed" if it refused a chunk."""
        target = self.by_socket[socket]
        while True:
            try:
                payload = socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return None
            try:
                reply: Reply = decode_reply(payload, self.unpack_options)
            except InvalidRequest:
                continue
            if self.in_flight[target].pop(reply.seq, None) is not None and reply.status != 0:
                log.error("shard %d: shard %d refused moving keys: %s", self.shard, target, reply.result)
                return "failed"


def install(store: VersionedStore, rows: Any) -> int:
    """MOVE_INSTALL on a new shard: the rows an old shard sent, with their timestamps."""
    if not isinstance(rows, list):
        raise InvalidRequest("MOVE_INSTALL takes [[ns, key, value | nil, ts, scope], ...]")
    by_ns: dict[bytes, list[tuple[bytes, bytes | None, int, Scope]]] = {}
    for row in rows:
        if not isinstance(row, list) or len(row) != 5:
            raise InvalidRequest("a moved row is [ns, key, value | nil, ts, scope]")
        ns, key, value, ts, scope = row
        if type(ns) is not bytes or type(key) is not bytes or type(ts) is not int or scope not in _SCOPE_CODES:
            raise InvalidRequest("a moved row is [ns, key, value | nil, ts, scope]")
        if value is not None and (type(value) is not bytes or not value):
            raise InvalidRequest("a moved value is msgpack bytes")
        by_ns.setdefault(ns, []).append((key, value, ts, _SCOPE_CODES[scope]))
    failpoint("shard.move_install")
    changed = 0
    with store.group():
        for ns, changes in by_ns.items():
            changed += store.install_raw(ns, changes)
    os.sched_yield()  # the copy is background work: a woken client or shard goes first
    return changed


def purge_foreign(store: VersionedStore, shard: int, shards: int) -> int:
    """Remove every key this shard does not own among `shards` shards (one journal
    record per namespace); returns how many."""
    if shard >= shards:
        return 0
    permanent, ephemeral = store.spaces_raw()
    foreign: dict[bytes, list[bytes]] = {}
    for ns in set(permanent) | set(ephemeral):
        keys = [*permanent.get(ns, {}), *ephemeral.get(ns, {})]
        foreign[ns] = [key for key, bucket in zip(keys, shards_for(ns, keys, shards), strict=True) if bucket != shard]
    return remove_keys(store, foreign)


def remove_keys(store: VersionedStore, keys: dict[bytes, list[bytes]]) -> int:
    """Remove `keys` ({ns: [key, ...]}) where present, one journal record per namespace;
    returns how many were removed."""
    permanent, ephemeral = store.spaces_raw()
    removed = 0
    for ns in sorted(keys):
        here = permanent.get(ns, {}), ephemeral.get(ns, {})
        present = [key for key in dict.fromkeys(keys[ns]) if key in here[0] or key in here[1]]
        if present:
            store.batch_raw(ns, [(key, None, Scope.PERMANENT) for key in present])
            removed += len(present)
    return removed
