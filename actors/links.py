"""The coordinator's requests to its shards, and the answers it waits for.

One DEALER socket per shard (routing id `coordinator`, so the shard knows who asks).
`call` sends one request and files a callback under its sequence number; `fan_out`
asks every shard and calls back once, with every answer or None for a shard that did
not answer by the deadline. The coordinator's loop polls the sockets and calls
`expire` for the deadlines: nothing here blocks.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from kvcluster.actors.shard import COORDINATOR_ID
from kvcluster.codec import Limits, Op, Reply, decode_reply, encode_request
from kvcluster.errors import InvalidRequest

__all__ = ["ShardLinks"]

log = logging.getLogger("kvcluster.coordinator")

Callback = Callable[[Reply | None], None]


class ShardLinks:
    def __init__(self, context: zmq.Context[Any], endpoints: list[str], limits: Limits) -> None:
        self.unpack_options = limits.unpack_options()
        self.sockets: list[zmq.Socket[Any]] = []
        self.context = context
        self.max_message = limits.max_message
        for endpoint in endpoints:
            self.add(endpoint)
        self._seq = 0
        self._waiting: dict[int, tuple[int, Callback]] = {}  # seq -> (the shard asked, its callback)
        self._deadlines: list[tuple[float, int]] = []

    def add(self, endpoint: str) -> zmq.Socket[Any]:
        """A link to one more shard (the next number): a resize starting new shards."""
        socket: zmq.Socket[Any] = self.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.ROUTING_ID, COORDINATOR_ID)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_message)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(endpoint)
        self.sockets.append(socket)
        return socket

    def truncate(self, count: int) -> list[zmq.Socket[Any]]:
        """Close the links to shards `count` and up (a resize rolled back); returns them."""
        dropped, self.sockets = self.sockets[count:], self.sockets[:count]
        for socket in dropped:
            socket.close(0)
        return dropped

    def call(
        self, shard: int, op: Op, args: Iterable[Any], callback: Callback, timeout: float = 5.0, epoch: int = 0
    ) -> None:
        """Send one request; `callback` gets the reply, or None at `timeout`. `epoch` is
        the map epoch, for data operations that a shard serves only under its own."""
        self._seq += 1
        seq = self._seq
        self._waiting[seq] = (shard, callback)
        heapq.heappush(self._deadlines, (time.monotonic() + timeout, seq))
        try:
            self.sockets[shard].send(encode_request(seq, epoch, op, *args), zmq.NOBLOCK)
        except zmq.Again:  # the shard's queue is full: it is down or stuck
            self._waiting.pop(seq)
            callback(None)

    def fan_out(
        self,
        shards: Iterable[int],
        op: Op,
        args: Iterable[Any],
        done: Callable[[dict[int, Reply | None]], None],
        timeout: float = 5.0,
        epoch: int = 0,
    ) -> None:
        targets = list(shards)
        answers: dict[int, Reply | None] = {}
        if not targets:
            done(answers)
            return
        frozen_args = list(args)
        for shard in targets:

            def collect(reply: Reply | None, shard: int = shard) -> None:
                answers[shard] = reply
                if len(answers) == len(targets):
                    done(answers)

            self.call(shard, op, frozen_args, collect, timeout, epoch)

    def receive(self, shard: int) -> None:
        """Dispatch every answer waiting on one shard's socket."""
        socket = self.sockets[shard]
        while True:
            try:
                payload = socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = decode_reply(payload, self.unpack_options)
            except InvalidRequest as exc:
                log.warning("undecodable answer from shard %d: %s", shard, exc)
                continue
            waiting = self._waiting.pop(reply.seq, None)
            if waiting is not None:  # else it came after its deadline: already answered None
                waiting[1](reply)

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][1] not in self._waiting:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _deadline, seq = heapq.heappop(self._deadlines)
            waiting = self._waiting.pop(seq, None)
            if waiting is not None:
                waiting[1](None)

    def abandon(self, shard: int) -> None:
        """The shard died: whatever it was asked gets its None now, not at the deadline
        (its successor never saw those requests, or answers them to no one)."""
        for seq in [seq for seq, (asked, _callback) in self._waiting.items() if asked == shard]:
            waiting = self._waiting.pop(seq, None)  # an earlier callback may have ended it
            if waiting is not None:
                waiting[1](None)

    def close(self) -> None:
        for socket in self.sockets:
            socket.close(0)
