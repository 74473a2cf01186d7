"""The gateway's asyncio server: one `RespConnection` (an asyncio Protocol) per client.

A connection reads requests as they come and runs many of them at once against the
cluster (the asyncio client keeps them all in flight), while its replies go out in
request order, gathered into one write per turn of the event loop. Order where it
matters is kept so:

- single-key commands are sent in request order as they are read (`Command.fast`:
  no coroutine, so nothing can overtake them), and requests on one key reach its
  shard in that order over one stream, which applies them in order;
- a command over several keys, or over the whole namespace (MSET, MGET/DEL/EXISTS
  of several keys, KEYS, SCAN, DBSIZE), starts once every earlier one has finished,
  and later ones wait for it;
- a command that changes the connection (SELECT, HELLO, QUIT) holds back the
  requests after it until it is done; each request runs with the namespace and
  protocol in force when it was read.

Everything a client sends is bounded: each request by the parser's limits, the
requests in flight per connection by MAX_PIPELINE (reading pauses beyond it, and while
the client does not read its replies), the replies it leaves unread by MAX_OUTPUT (then
it is disconnected, as by Redis's output buffer limit), and the connections by
`max_connections`.
A protocol error is answered and the connection closed, as Redis does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Final, cast

from kvcluster.codec import DEFAULT_MAX_MESSAGE
from kvcluster.resp.commands import Command, CommandError, CommandTable, FastHandler, error_text
from kvcluster.resp.protocol import ProtocolError, RequestParser, encode, encode_error
from kvcluster.resp.session import DEFAULT_NAMESPACE, Context, Session, Shared

__all__ = ["MAX_CONNECTIONS", "MAX_OUTPUT", "MAX_PIPELINE", "GatewayServer", "RespConnection"]

log = logging.getLogger("kvcluster.resp")

MAX_CONNECTIONS: Final = 10_000  # clients served at once; the next is told so and closed
MAX_PIPELINE: Final = 512  # requests of one connection in flight or awaiting their turn to be sent
MAX_OUTPUT: Final = 2 * DEFAULT_MAX_MESSAGE  # bytes of replies a client leaves unread before it is cut off
_MAX_CLIENTS_REPLY: Final = b"-ERR max number of clients reached\r\n"


def _key_count(command: Command, args: list[bytes]) -> int:
    first, last, step = command.keys
    if first == 0:
        return 0
    end = len(args) - 1 if last < 0 else last
    return max(0, (end - first) // step + 1)


class _Slot:
    """The place of a reply that a fast path fills in."""

    __slots__ = ("reply",)

    def __init__(self) -> None:
        self.reply: bytes | None = None


class RespConnection(asyncio.Protocol):
    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.shared = server.shared
        self.table: CommandTable = server.shared.table
        self.parser = RequestParser()
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        # replies in request order: bytes once known, else the task computing it
        self.replies: deque[bytes | _Slot | asyncio.Task[bytes]] = deque()
        self.running = 0  # tasks not yet done
        self.alone = False  # a command that must run by itself (or change the session) is running
        self.held: tuple[Command, list[bytes]] | None = None  # read, waiting for the running ones
        self.reading = True
        self.writing = True
        self.flush_due = False
        self.eof = False  # the client sent all it will send
        self.drained = True  # the parser holds no complete request
        self.closed = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, base)  # (what a stream server makes)
        shared = self.shared
        if len(shared.sessions) >= shared.max_connections:
            shared.connections_refused += 1
            transport.write(_MAX_CLIENTS_REPLY)
            transport.close()
            self.closed = True
            return
        shared.connections_total += 1
        peer = transport.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.session = Session(shared.connections_total, address, shared.proxy(DEFAULT_NAMESPACE))
        shared.sessions[self.session.id] = self.session
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.session is None or self.session.closing:
            return
        self.parser.feed(data)
        self.drained = False
        self._pump()

    def eof_received(self) -> bool:
        self.eof = True
        self._schedule_flush()
        return True  # keep the write side open: the replies still owed go out, then it closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.session is not None:
            self.shared.sessions.pop(self.session.id, None)
        self.server.connections.discard(self)
        # Tasks still running finish on their own (a write is not cut off half-way);
        # their replies have nowhere to go.

    def pause_writing(self) -> None:
        self.writing = False
        self._read_control()

    def resume_writing(self) -> None:
        self.writing = True
        self._pump()

    # -- requests -------------------------------------------------------------------------

    def _pump(self) -> None:
        """Start the requests read so far, as far as the order rules allow."""
        session = self.session
        answered = False  # replies known at once (errors) were queued: a flush must follow
        while not self.closed and session is not None and not session.closing and not self.alone:
            if self.held is not None:
                if self.running:
                    break
                held, self.held = self.held, None
                self._start(session, *held, alone=True)
                continue
            if len(self.replies) >= self.server.max_pipeline:
                break
            try:
                args = self.parser.next()
            except ProtocolError as exc:
                self.replies.append(encode_error(f"ERR {exc}"))
                session.closing = answered = True
                break
            if args is None:
                self.drained = True
                break
            self.shared.commands_total += 1
            try:
                command = self.table.lookup(args)
            except CommandError as exc:
                self.shared.errors_total += 1
                self.replies.append(encode_error(str(exc)))
                answered = True
                continue
            keys = _key_count(command, args)
            if command.barrier:
                self._start(session, command, args, alone=True)
            elif command.alone or keys > 1:
                self.held = (command, args)
            elif command.fast is not None and self._start_now(command.fast, session, args):
                pass  # sent already, behind every earlier request on its key
            elif keys:
                self.held = (command, args)  # a coroutine would start later: it must not be overtaken
            else:
                self._start(session, command, args, alone=False)
        self._read_control()
        if answered:
            self._schedule_flush()

    def _start(self, session: Session, command: Command, args: list[bytes], *, alone: bool) -> None:
        context = Context(self.shared, session, session.namespace, session.protocol)
        task = asyncio.get_running_loop().create_task(self._run(command, context, args))
        self.replies.append(task)
        self.running += 1
        self.alone = alone
        task.add_done_callback(self._task_finished)

    def _start_now(self, fast: FastHandler, session: Session, args: list[bytes]) -> bool:
        """Send a request through the command's fast path (no coroutine of ours runs for
        it); False if the command leaves this request to its handler."""
        context = Context(self.shared, session, session.namespace, session.protocol)
        try:
            started = fast(context, args)
        except Exception as exc:  # refused before it was sent: a reply at once
            self.shared.errors_total += 1
            self.replies.append(encode_error(error_text(exc)))
            self._schedule_flush()
            return True
        if started is None:
            return False
        answer, to_reply = started
        slot = _Slot()
        self.replies.append(slot)
        self.running += 1
        protocol = context.protocol

        def answered(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                reply = encode_error("ERR cancelled")
            else:
                try:
                    reply = encode(to_reply(future), protocol)
                except Exception as exc:  # what the cluster raised, WRONGTYPE, or a value with no RESP form
                    self.shared.errors_total += 1
                    reply = encode_error(error_text(exc))
            slot.reply = reply
            self._finished()

        answer.add_done_callback(answered)
        return True

    async def _run(self, command: Command, context: Context, args: list[bytes]) -> bytes:
        try:
            result = await command.handler(context, args)
        except Exception as exc:  # every failure is a reply; the connection goes on
            self.shared.errors_total += 1
            return encode_error(error_text(exc))
        # a command that changed the protocol (HELLO 3) answers in the new one
        protocol = context.session.protocol if command.barrier else context.protocol
        try:
            return encode(result, protocol)
        except (TypeError, ValueError) as exc:
            return encode_error(error_text(exc))

    def _task_finished(self, task: asyncio.Task[bytes]) -> None:
        self._finished()

    def _finished(self) -> None:
        self.running -= 1
        if self.alone and self.running == 0:
            self.alone = False
        self._schedule_flush()
        if not self.closed:
            self._pump()

    # -- replies --------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        """Write what is ready at the next turn of the loop: replies finishing meanwhile
        go out in the same write."""
        if not self.flush_due and not self.closed:
            self.flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_due = False
        replies = self.replies
        ready: list[bytes] = []
        while replies:
            head = replies[0]
            if isinstance(head, bytes):
                ready.append(head)
            elif isinstance(head, _Slot):
                if head.reply is None:
                    break
                ready.append(head.reply)
            elif head.done():
                ready.append(head.result() if not head.cancelled() else encode_error("ERR cancelled"))
            else:
                break
            replies.popleft()
        transport = self.transport
        if transport is None or self.closed:
            return
        if ready:
            transport.write(b"".join(ready) if len(ready) > 1 else ready[0])
            if transport.get_write_buffer_size() > self.server.max_output:  # as Redis's output buffer limit
                log.warning("closing %s: over %d bytes of replies unread", self._who(), self.server.max_output)
                self.closed = True
                transport.abort()
                return
        session = self.session
        finished = session is None or session.closing or (self.eof and self.drained and self.held is None)
        if finished and not replies and not self.running:
            self.closed = True
            transport.close()  # (after what is buffered is written)
        elif ready:
            self._pump()  # replies left the queue: room for requests read and not started yet
        else:
            self._read_control()

    def _who(self) -> str:
        return "a client" if self.session is None else f"client {self.session.id} ({self.session.address})"

    def _read_control(self) -> None:
        """Read only while there is room: requests in flight under the limit, nothing held
        back, and the client taking its replies."""
        transport = self.transport
        if transport is None or self.closed:
            return
        want = self.writing and self.held is None and not self.alone and len(self.replies) < self.server.max_pipeline
        if want != self.reading:
            self.reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()


class GatewayServer:
    """The listening socket and its connections."""

    def __init__(self, shared: Shared, *, max_pipeline: int = MAX_PIPELINE, max_output: int = MAX_OUTPUT) -> None:
        self.shared = shared
        self.max_pipeline = max_pipeline
        self.max_output = max_output
        self.connections: set[RespConnection] = set()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: RespConnection(self), host, port, reuse_address=True)
        log.info("RESP gateway serving %s:%d", host, port)

    def bound(self) -> list[tuple[str, int]]:
        """The addresses the server listens on."""
        if self.server is None:
            return []
        return [sock.getsockname()[:2] for sock in self.server.sockets]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        if self.server is not None:
            await self.server.wait_closed()
