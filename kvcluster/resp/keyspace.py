"""The data commands: GET SET DEL EXISTS MGET MSET GETDEL KEYS SCAN DBSIZE, on the
connection's namespace, through the asyncio client.

Keys arrive as bytes and must be UTF-8 (kvcluster keys are text, 1..1024 bytes).
Values are stored as `bytes`. A value that a Python client stored reads back by its
type: bytes as they are, str as UTF-8, int and float as decimal text; any other type
(None, bool, list, dict) has no Redis string form and is `WRONGTYPE` (MGET: nil, as
Redis answers for a key of another type).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Final

from kvcluster.batch import BatchMode
from kvcluster.client.core import Call, ClientCore
from kvcluster.errors import KeyNotFound
from kvcluster.keys import MAX_KEY_BYTES
from kvcluster.resp.commands import Command, CommandError, Handler, Started, integer_arg, syntax_error
from kvcluster.resp.glob import compile_glob, has_wildcards
from kvcluster.resp.protocol import MAX_ARRAY, Reply, Simple
from kvcluster.resp.session import Context
from kvcluster.scope import Scope

__all__ = ["COMMANDS", "key_of", "redis_value"]

OK: Final = Simple("OK")
SCAN_DEFAULT_COUNT: Final = 10
_WRONGTYPE: Final = "WRONGTYPE Operation against a key holding the wrong kind of value"
_MISSING: Final = object()  # GET's default: a stored None is a value (of no Redis type), not a miss


def key_of(arg: bytes) -> str:
    """A key from the wire: valid UTF-8, 1..1024 bytes."""
    if not 0 < len(arg) <= MAX_KEY_BYTES:
        raise CommandError(f"ERR kvcluster keys are 1..{MAX_KEY_BYTES} bytes, not {len(arg)}")
    try:
        return arg.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("ERR kvcluster keys are text: this key is not valid UTF-8") from None


def _keys_of(args: list[bytes]) -> list[str]:
    return [key_of(arg) for arg in args]


def redis_value(value: Any, what: str = "the value") -> bytes:
    """A stored value as a Redis string; WRONGTYPE for a type that has none."""
    kind = type(value)
    if kind is bytes:
        return value  # type: ignore[no-any-return]
    if kind is str:
        return value.encode()  # type: ignore[no-any-return]
    if kind is int or kind is float:
        return repr(value).encode()
    raise CommandError(
        f"{_WRONGTYPE} ({what} is a {kind.__name__} stored by a Python client; "
        "the gateway reads bytes, str, int and float values)"
    )


def _or_nil(value: Any) -> bytes | None:
    """MGET's view: a value with no Redis string form reads as nil."""
    kind = type(value)
    if kind is bytes or kind is str or kind is int or kind is float:
        return redis_value(value)
    return None


# -- single-key commands: sent at once, in request order (see server.py) ----------------


def _core(ctx: Context) -> tuple[ClientCore, bytes]:
    """The client core that makes the calls, and the namespace they go to."""
    core = ctx.shared.client.core
    return core, core.namespace_name(ctx.namespace.name)


def _send(ctx: Context, call: Call) -> asyncio.Future[Any]:
    """Send `call` now: requests go out in the order they are made."""
    return ctx.shared.client.submit(call)


def _value_or_nil(done: asyncio.Future[Any], what: str = "the value") -> Reply:
    """The reply for a value read (KeyNotFound and the GET default: nil)."""
    error = done.exception()
    if isinstance(error, KeyNotFound):
        return None
    if error is not None:
        raise error
    value = done.result()
    return None if value is _MISSING else redis_value(value, what)


def get_now(ctx: Context, args: list[bytes]) -> Started:
    core, ns = _core(ctx)
    return _send(ctx, core.get(ns, key_of(args[1]), _MISSING)), _value_or_nil


def _written(done: asyncio.Future[Any]) -> Reply:
    done.result()  # (raises what the write raised)
    return OK


def _replaced(done: asyncio.Future[Any]) -> Reply:
    """SET XX: OK if the key existed (and was replaced), nil if not."""
    error = done.exception()
    if isinstance(error, KeyNotFound):
        return None
    return _written(done)


def set_now(ctx: Context, args: list[bytes]) -> Started:
    only_existing, return_old = _set_options(args[3:])
    core, ns = _core(ctx)
    key = key_of(args[1])
    if not only_existing:
        return _send(ctx, core.set(ns, key, args[2], Scope.PERMANENT)), _written
    # XX: UPDATE replaces an existing key only, atomically, and returns the value it replaced
    replaced = _send(ctx, core.update(ns, key, args[2]))
    if return_old:
        return replaced, lambda done: _value_or_nil(done, "the old value (replaced)")
    return replaced, _replaced


def getdel_now(ctx: Context, args: list[bytes]) -> Started:
    core, ns = _core(ctx)
    return _send(ctx, core.consume(ns, key_of(args[1]))), lambda done: _value_or_nil(done, "the value (deleted)")


def del_now(ctx: Context, args: list[bytes]) -> Started | None:
    if len(set(args[1:])) > 1:
        return None
    core, ns = _core(ctx)
    return _send(ctx, core.delete(ns, key_of(args[1]))), lambda done: int(done.result())


def exists_now(ctx: Context, args: list[bytes]) -> Started | None:
    if len(set(args[1:])) > 1:
        return None
    core, ns = _core(ctx)
    return _send(ctx, core.exists(ns, key_of(args[1]))), lambda done: int(done.result()) * (len(args) - 1)


def mget_now(ctx: Context, args: list[bytes]) -> Started | None:
    if len(set(args[1:])) > 1:
        return None

    def values(done: asyncio.Future[Any]) -> Reply:
        value = done.result()
        return [None if value is _MISSING else _or_nil(value)] * (len(args) - 1)

    core, ns = _core(ctx)
    return _send(ctx, core.get(ns, key_of(args[1]), _MISSING)), values


def awaiting(now: Callable[[Context, list[bytes]], Started | None]) -> Handler:
    """A command's handler made of its fast path (for when it runs as a coroutine)."""

    async def handler(ctx: Context, args: list[bytes]) -> Reply:
        started = now(ctx, args)
        if started is None:
            raise CommandError("ERR internal error: no way to run this request")
        answer, to_reply = started
        with contextlib.suppress(Exception):
            await answer
        return to_reply(answer)

    return handler


def _set_options(options: list[bytes]) -> tuple[bool, bool]:
    """(XX given, GET given), refusing the options kvcluster cannot honour."""
    only_existing = return_old = False
    seen: set[str] = set()
    i = 0
    while i < len(options):
        option = options[i].upper().decode("ascii", "replace")
        if option in ("EX", "PX", "EXAT", "PXAT"):
            if i + 1 >= len(options):
                raise syntax_error()
            raise CommandError(f"ERR SET option '{option}' is not supported: kvcluster keys do not expire")
        if option == "NX":
            raise CommandError(
                "ERR SET option 'NX' is not supported: kvcluster has no atomic set-if-absent "
                "(XX, which replaces only an existing key, is)"
            )
        if option not in ("XX", "GET", "KEEPTTL") or option in seen:
            raise syntax_error()
        seen.add(option)
        only_existing |= option == "XX"
        return_old |= option == "GET"
        i += 1
    if return_old and not only_existing:
        raise CommandError(
            "ERR SET option 'GET' is supported with XX only: kvcluster returns the old value "
            "atomically when it replaces an existing key, not when it may create one"
        )
    return only_existing, return_old


async def delete(ctx: Context, args: list[bytes]) -> Reply:
    keys = list(dict.fromkeys(_keys_of(args[1:])))
    if len(keys) == 1:  # (a batch of one would call a missing key an error)
        return int(await ctx.namespace.delete(keys[0]))
    result = await ctx.namespace.delete_many(keys, BatchMode.BEST_EFFORT)
    _raise_other_than_missing(result.errors)
    return result.processed


def _raise_other_than_missing(errors: dict[str, Any] | None) -> None:
    for error in (errors or {}).values():
        if not isinstance(error, KeyNotFound):
            raise error


async def exists(ctx: Context, args: list[bytes]) -> Reply:
    keys = _keys_of(args[1:])
    distinct = list(dict.fromkeys(keys))
    found = await asyncio.gather(*(ctx.namespace.exists(key) for key in distinct))
    present = {key for key, there in zip(distinct, found, strict=True) if there}
    return sum(key in present for key in keys)  # a key named twice counts twice, as in Redis


async def mget(ctx: Context, args: list[bytes]) -> Reply:
    keys = _keys_of(args[1:])
    result = await ctx.namespace.get_many(list(dict.fromkeys(keys)), BatchMode.BEST_EFFORT)
    _raise_other_than_missing(result.errors)
    return [_or_nil(result.data.get(key)) for key in keys]


async def mset(ctx: Context, args: list[bytes]) -> Reply:
    if len(args) % 2 != 1:
        raise CommandError("ERR wrong number of arguments for 'mset' command")
    items = {key_of(args[i]): args[i + 1] for i in range(1, len(args), 2)}  # a repeated key: the last wins
    await ctx.namespace.set_many(items, BatchMode.ALL_OR_NOTHING)
    return OK


async def dbsize(ctx: Context, args: list[bytes]) -> Reply:
    return await ctx.namespace.count()


async def keys(ctx: Context, args: list[bytes]) -> Reply:
    pattern = args[1]
    if not has_wildcards(pattern):  # one key at most: ask for it
        try:
            key = key_of(pattern)
        except CommandError:
            return []  # no key could be named so
        return [pattern] if await ctx.namespace.exists(key) else []
    match = compile_glob(pattern)
    found: list[Reply] = []
    async for key, _value in ctx.namespace.items():
        raw = key.encode()
        if match(raw):
            found.append(raw)
    return found


async def scan(ctx: Context, args: list[bytes]) -> Reply:
    cursor_text = args[1].decode("ascii", "replace")
    if not cursor_text.isdigit() or not 0 <= int(cursor_text) < (1 << 64):
        raise CommandError("ERR invalid cursor")
    cursor = int(cursor_text)
    pattern: bytes | None = None
    count = SCAN_DEFAULT_COUNT
    options = args[2:]
    for i in range(0, len(options), 2):
        if i + 1 >= len(options):
            raise syntax_error()
        option, value = options[i].upper(), options[i + 1]
        if option == b"MATCH":
            pattern = value
        elif option == b"COUNT":
            count = integer_arg(value)
            if count < 1:
                raise syntax_error()
        elif option == b"TYPE":
            raise CommandError("ERR SCAN option 'TYPE' is not supported: every kvcluster key is a string")
        else:
            raise syntax_error()
    namespace = ctx.namespace
    if cursor == 0:
        stream = namespace.items()
    else:
        taken = ctx.session.cursors.take(cursor, namespace.name)
        if taken is None:
            raise CommandError(
                f"ERR SCAN cursor {cursor} is unknown or expired (cursors belong to one connection and "
                "namespace, and expire after 300 s unused)"
            )
        stream = taken
    match = None if pattern is None else compile_glob(pattern)
    found: list[Reply] = []
    finished = False
    for _ in range(min(count, MAX_ARRAY)):
        try:
            key, _value = await anext(stream)
        except StopAsyncIteration:
            finished = True
            break
        raw = key.encode()
        if match is None or match(raw):
            found.append(raw)
    following = 0 if finished else ctx.session.cursors.keep(stream, namespace.name)
    return [str(following).encode(), found]


COMMANDS: Final = [
    Command("get", 2, awaiting(get_now), "Get the value of a key", "string", ("readonly", "fast"), (1, 1, 1),
            syntax="key", fast=get_now),
    Command("set", -3, awaiting(set_now), "Set the value of a key (options XX, GET with XX, KEEPTTL)", "string",
            ("write",), (1, 1, 1), syntax="key value [XX] [GET] [KEEPTTL]", fast=set_now),
    Command("getdel", 2, awaiting(getdel_now), "Get the value of a key and delete it", "string", ("write", "fast"),
            (1, 1, 1), syntax="key", fast=getdel_now),
    Command("del", -2, delete, "Delete keys; the number deleted", "generic", ("write",), (1, -1, 1),
            syntax="key ...", fast=del_now),
    Command("exists", -2, exists, "How many of the keys exist", "generic", ("readonly", "fast"), (1, -1, 1),
            syntax="key ...", fast=exists_now),
    Command("mget", -2, mget, "Get the values of keys", "string", ("readonly", "fast"), (1, -1, 1),
            syntax="key ...", fast=mget_now),
    Command("mset", -3, mset, "Set keys at once, all or none", "string", ("write",), (1, -1, 2),
            syntax="key value ..."),
    Command("dbsize", 1, dbsize, "The number of keys in the namespace", "server", ("readonly", "fast"),
            alone=True),
    Command("keys", 2, keys, "The keys matching a pattern", "generic", ("readonly",), alone=True, syntax="pattern"),
    Command("scan", -2, scan, "Iterate over the keys", "generic", ("readonly",), alone=True,
            syntax="cursor [MATCH pattern] [COUNT count]"),
]  # fmt: skip
