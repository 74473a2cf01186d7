"""The command table: name -> handler, the arity check, and Redis-style error replies.

Handlers live beside their kind (`keyspace`, `connection`, `introspection`); each of
those modules lists its `Command`s and the gateway builds one `CommandTable` of them.
A handler is a coroutine taking the request's `Context` and its arguments (the
command name first, as Redis counts them) and returning a reply value
(`kvcluster.resp.protocol.Reply`); it refuses a request by raising `CommandError`.
Every other `KVError` becomes the Redis error that means the same (`error_text`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from kvcluster.errors import (
    BatchFailed,
    ClusterUnavailable,
    InvalidRequest,
    KeyNotFound,
    KVError,
    NamespaceFull,
    NamespaceNotFound,
    StorageError,
    Timeout,
    ValueTooLarge,
)
from kvcluster.resp.protocol import Reply
from kvcluster.resp.session import Context

__all__ = [
    "Command",
    "CommandError",
    "CommandTable",
    "FastHandler",
    "Handler",
    "Started",
    "error_text",
    "integer_arg",
    "syntax_error",
    "wrong_arity",
]

log = logging.getLogger("kvcluster.resp")

Handler = Callable[[Context, list[bytes]], Awaitable[Reply]]
# A handler's fast path: the request already sent (the future of the client's answer) and
# how to turn that future, once done, into the reply; None to leave the request to the handler.
Started = tuple[asyncio.Future[Any], Callable[[asyncio.Future[Any]], Reply]]
FastHandler = Callable[[Context, list[bytes]], Started | None]
_SHOWN_ARGS: Final = 128  # characters of arguments quoted in an unknown-command error (as Redis)


class CommandError(InvalidRequest):
    """A request refused; its text is the error reply, code first (`ERR ...`, `WRONGTYPE ...`)."""


@dataclass(frozen=True)
class Command:
    """One command: `arity` counts the name, as Redis does (-N: at least N)."""

    name: str
    arity: int
    handler: Handler
    summary: str
    group: str = "generic"
    flags: tuple[str, ...] = ()  # COMMAND's flags: readonly, write, fast, ...
    keys: tuple[int, int, int] = (0, 0, 0)  # first key, last key, step (COMMAND's key positions)
    barrier: bool = False  # changes the connection's state: later requests wait until it is done
    alone: bool = False  # runs by itself: after every earlier request, before any later one
    syntax: str = ""  # the arguments after the name, for COMMAND DOCS: `key value [XX]`, `key ...`
    fast: FastHandler | None = None  # sends the request without a coroutine (GET, SET)


class CommandTable:
    """The commands a gateway serves, by lower-case name."""

    def __init__(self, commands: Iterable[Command]) -> None:
        self.commands: dict[str, Command] = {}
        for command in commands:
            if command.name in self.commands:
                raise InvalidRequest(f"command {command.name!r} defined twice")
            self.commands[command.name] = command

    def __len__(self) -> int:
        return len(self.commands)

    def lookup(self, args: list[bytes]) -> Command:
        """The command `args` call, with its arity checked; CommandError otherwise."""
        name = args[0].lower().decode("utf-8", "replace")
        command = self.commands.get(name)
        if command is None:
            raise CommandError(unknown_command(args))
        arity = command.arity
        if (arity > 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
            raise wrong_arity(command.name)
        return command


def _text(arg: bytes, limit: int) -> str:
    return arg[:limit].decode("utf-8", "replace")


def unknown_command(args: list[bytes]) -> str:
    """Redis's own wording: the name, then the first arguments, quoted, at most 128 characters."""
    shown = ""
    for arg in args[1:]:
        if len(shown) >= _SHOWN_ARGS:
            break
        shown += f"'{_text(arg, _SHOWN_ARGS - len(shown))}' "
    return f"ERR unknown command '{_text(args[0], _SHOWN_ARGS)}', with args beginning with: {shown}"


def unknown_subcommand(args: list[bytes]) -> CommandError:
    name = args[0].decode("utf-8", "replace").upper()
    return CommandError(f"ERR unknown subcommand '{_text(args[1], _SHOWN_ARGS)}'. Try {name} HELP.")


def wrong_arity(name: str) -> CommandError:
    return CommandError(f"ERR wrong number of arguments for '{name}' command")


def syntax_error() -> CommandError:
    return CommandError("ERR syntax error")


def integer_arg(arg: bytes) -> int:
    """A signed 64-bit integer argument, as Redis reads one."""
    text = arg.decode("ascii", "replace")
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not -(1 << 63) <= value < (1 << 63) or text != str(value):
        raise CommandError("ERR value is not an integer or out of range")
    return value


def _code(error: KVError) -> str:
    if isinstance(error, NamespaceFull):
        return "OOM"
    if isinstance(error, Timeout):
        return "TRYAGAIN"
    if isinstance(error, ClusterUnavailable):
        return "TRYAGAIN" if "conflict" in str(error) else "CLUSTERDOWN"
    return "ERR"


def error_text(error: BaseException) -> str:
    """The Redis error reply (code first) that says what `error` means."""
    if isinstance(error, CommandError):
        return str(error)
    if isinstance(error, BatchFailed):
        failures = list(error.errors.items())
        if not failures:
            return f"ERR batch not applied: {error}"
        key, first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return f"{_code(first)} batch not applied: key {key!r}: {first}{more}"
    if isinstance(error, Timeout):
        return f"TRYAGAIN {error} (the outcome of a write is unknown)"
    if isinstance(error, NamespaceFull):
        return f"OOM {error}"
    if isinstance(error, ValueTooLarge):
        return f"ERR value too large: {error}"
    if isinstance(error, KeyNotFound):
        return "ERR no such key"
    if isinstance(error, NamespaceNotFound):
        return f"ERR namespace not found: {error}"
    if isinstance(error, StorageError):
        return f"ERR storage error: {error}"
    if isinstance(error, KVError):
        return f"{_code(error)} {error}"
    log.exception("internal error", exc_info=error)
    return f"ERR internal error ({type(error).__name__}); see the gateway's log"
