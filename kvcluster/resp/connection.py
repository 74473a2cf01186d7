"""The connection commands: PING ECHO QUIT SELECT HELLO AUTH CLIENT.

SELECT chooses the namespace later commands of the connection use: `SELECT 0` is the
namespace `default`, `SELECT n` the namespace named `n` (str(n)), and `SELECT name`
any namespace by name. The namespace must exist (the gateway creates none).
"""

from __future__ import annotations

import time
from typing import Final

from kvcluster.errors import InvalidRequest, NamespaceNotFound
from kvcluster.resp.commands import Command, CommandError, integer_arg, syntax_error, unknown_subcommand, wrong_arity
from kvcluster.resp.protocol import Reply, Simple
from kvcluster.resp.session import DEFAULT_NAMESPACE, Context, Session

__all__ = ["COMMANDS", "REDIS_VERSION", "client_line", "namespace_for"]

REDIS_VERSION: Final = "7.0.0"  # the protocol level the gateway speaks, as clients read INFO and HELLO
OK: Final = Simple("OK")
_NO_PASSWORDS: Final = (
    "ERR AUTH is not available: the kvcluster gateway has no users or passwords "
    "(it serves loopback only); connect without a password"
)


async def ping(ctx: Context, args: list[bytes]) -> Reply:
    if len(args) > 2:
        raise wrong_arity("ping")
    return Simple("PONG") if len(args) == 1 else args[1]


async def echo(ctx: Context, args: list[bytes]) -> Reply:
    return args[1]


async def quit_(ctx: Context, args: list[bytes]) -> Reply:
    ctx.session.closing = True
    return OK


def namespace_for(arg: bytes) -> str:
    """The namespace SELECT names: 0 is `default`, another number n the namespace "n"."""
    text = arg.decode("utf-8", "replace")
    if text.lstrip("-").isdigit():
        index = integer_arg(arg)
        if index < 0:
            raise CommandError("ERR DB index is out of range")
        return DEFAULT_NAMESPACE if index == 0 else str(index)
    return text


async def select(ctx: Context, args: list[bytes]) -> Reply:
    name = namespace_for(args[1])
    try:
        await ctx.shared.client.namespace(name)  # NamespaceNotFound if there is none
    except (NamespaceNotFound, InvalidRequest):
        raise CommandError(
            f"ERR DB index is out of range: no namespace named {name!r} "
            "(SELECT 0 is 'default'; SELECT n is the namespace named n; create namespaces with kvcluster)"
        ) from None
    ctx.session.namespace = ctx.shared.proxy(name)
    return OK


def _server_map(ctx: Context) -> dict[str | bytes, Reply]:
    return {
        "server": "redis",
        "version": REDIS_VERSION,
        "proto": ctx.session.protocol,
        "id": ctx.session.id,
        "mode": "standalone",
        "role": "master",
        "modules": [],
    }


def _client_name(arg: bytes) -> bytes | None:
    if any(c < 0x21 or c > 0x7E for c in arg):
        raise CommandError("ERR Client names cannot contain spaces, newlines or special characters.")
    return arg or None


async def hello(ctx: Context, args: list[bytes]) -> Reply:
    """HELLO [2|3 [AUTH user pass] [SETNAME name]]: the server map, in the protocol chosen."""
    protocol = ctx.session.protocol
    name: bytes | None = None
    name_given = False
    if len(args) > 1:
        try:
            protocol = integer_arg(args[1])
        except CommandError:
            raise CommandError("ERR Protocol version is not an integer or out of range") from None
        if protocol not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
        i = 2
        while i < len(args):
            option = args[i].upper()
            if option == b"AUTH" and i + 2 < len(args):
                raise CommandError(_NO_PASSWORDS)
            if option == b"SETNAME" and i + 1 < len(args):
                name, name_given = _client_name(args[i + 1]), True
                i += 2
                continue
            raise CommandError(f"ERR Syntax error in HELLO option '{args[i].decode('utf-8', 'replace')}'")
    ctx.session.protocol = protocol
    if name_given:
        ctx.session.name = name
    return _server_map(ctx)


async def auth(ctx: Context, args: list[bytes]) -> Reply:
    if len(args) > 3:
        raise syntax_error()
    raise CommandError(_NO_PASSWORDS)


def client_line(session: Session, now: float) -> str:
    """One connection as CLIENT LIST and CLIENT INFO describe it."""
    name = (session.name or b"").decode("ascii", "replace")
    library = {key: value.decode("ascii", "replace") for key, value in session.library.items()}
    return (
        f"id={session.id} addr={session.address} name={name} age={int(now - session.created)} "
        f"db={session.namespace.name} resp={session.protocol} lib-name={library.get('lib-name', '')} "
        f"lib-ver={library.get('lib-ver', '')}"
    )


async def client(ctx: Context, args: list[bytes]) -> Reply:
    sub = args[1].lower()
    session = ctx.session
    if sub == b"id" and len(args) == 2:
        return session.id
    if sub == b"getname" and len(args) == 2:
        return session.name
    if sub == b"setname" and len(args) == 3:
        session.name = _client_name(args[2])
        return OK
    if sub == b"setinfo" and len(args) == 4:
        attribute = args[2].lower().decode("ascii", "replace")
        if attribute not in ("lib-name", "lib-ver"):
            raise CommandError(f"ERR Unrecognized option '{args[2].decode('utf-8', 'replace')}'")
        if any(c < 0x21 or c > 0x7E for c in args[3]):
            raise CommandError(f"ERR {attribute} cannot contain spaces, newlines or special characters.")
        session.library[attribute] = args[3][:128]
        return OK
    if sub == b"info" and len(args) == 2:
        return client_line(session, time.monotonic()) + "\n"
    if sub == b"list" and len(args) == 2:
        now = time.monotonic()
        return "".join(client_line(other, now) + "\n" for other in list(ctx.shared.sessions.values()))
    if sub == b"help" and len(args) == 2:
        return [Simple(line) for line in _CLIENT_HELP]
    if sub in (b"id", b"getname", b"setname", b"setinfo", b"info", b"list", b"help"):
        raise wrong_arity(f"client|{sub.decode()}")
    raise unknown_subcommand(args)


_CLIENT_HELP: Final = (
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME, SETNAME <name>, ID, INFO, LIST, SETINFO <LIB-NAME|LIB-VER> <value>, HELP",
)

COMMANDS: Final = [
    Command("ping", -1, ping, "Ping the gateway", "connection", ("fast",), syntax="[message]"),
    Command("echo", 2, echo, "Echo the message", "connection", ("fast",), syntax="message"),
    Command("quit", -1, quit_, "Close the connection", "connection", ("fast",), barrier=True, syntax=""),
    Command(
        "select",
        2,
        select,
        "Choose the namespace: 0 is default, n the namespace named n",
        "connection",
        ("fast",),
        barrier=True,
        syntax="index",
    ),
    Command(
        "hello",
        -1,
        hello,
        "Choose the protocol (2 or 3); the server's details",
        "connection",
        ("fast",),
        barrier=True,
        syntax="[protover] [SETNAME name]",
    ),
    Command("auth", -2, auth, "Refused: the gateway has no passwords", "connection", ("fast",), syntax="password"),
    Command(
        "client", -2, client, "The connection's name, id and details", "connection", (), syntax="subcommand [arg ...]"
    ),
]
