"""What clients ask about the server: INFO, COMMAND (COUNT, DOCS, INFO), CONFIG GET.

INFO's figures are real: the gateway's own (connections, commands) and the cluster's
(`client.stats()`: shards, keys per namespace). CONFIG GET answers the few parameters
tools ask for (redis-benchmark asks `save` and `appendonly`) with what kvcluster does.
"""

from __future__ import annotations

import platform
import sys
import time
from typing import Any, Final

from kvcluster.resp.commands import Command, CommandError, unknown_subcommand
from kvcluster.resp.connection import REDIS_VERSION
from kvcluster.resp.glob import compile_glob
from kvcluster.resp.protocol import MAX_BULK, Reply, Simple
from kvcluster.resp.session import DEFAULT_NAMESPACE, Context

__all__ = ["COMMANDS", "keyspace_label"]

_SECTIONS: Final = ("server", "clients", "stats", "keyspace")
_APPENDFSYNC: Final = {"none": "no", "interval": "everysec", "always": "always"}


def keyspace_label(namespace: str) -> str:
    """A namespace's line name in INFO keyspace: db0 for default, dbN for the namespace
    "N" (what SELECT N reaches), ns_<name> for any other (no ':' in a field name)."""
    if namespace == DEFAULT_NAMESPACE:
        return "db0"
    if namespace.isdigit() and namespace == str(int(namespace)) and namespace != "0":
        return f"db{namespace}"
    return "ns_" + namespace.replace(":", "_")


def _server(ctx: Context, stats: dict[str, Any]) -> list[tuple[str, object]]:
    import kvcluster  # (here: the package imports the coordinator, which imports this module)

    uptime = int(time.monotonic() - ctx.shared.started)
    port = ctx.shared.address.rsplit(":", 1)[1]
    return [
        ("redis_version", REDIS_VERSION),
        ("redis_mode", "standalone"),
        ("os", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("arch_bits", 64 if sys.maxsize > 2**32 else 32),
        ("process_id", ctx.shared.pid),
        ("tcp_port", port),
        ("uptime_in_seconds", uptime),
        ("uptime_in_days", uptime // 86400),
        ("executable", sys.executable),
        ("kvcluster_version", kvcluster.__version__),
        ("kvcluster_data_dir", stats.get("data_dir", ctx.shared.data_dir)),
        ("kvcluster_shards", len(stats.get("shards", []))),
        ("kvcluster_durability", stats.get("durability", "")),
        ("kvcluster_epoch", stats.get("epoch", "")),
        ("kvcluster_ready", int(bool(stats.get("ready")))),
    ]


def _clients(ctx: Context) -> list[tuple[str, object]]:
    return [("connected_clients", len(ctx.shared.sessions)), ("maxclients", ctx.shared.max_connections)]


def _stats(ctx: Context, stats: dict[str, Any]) -> list[tuple[str, object]]:
    shared = ctx.shared
    shard_ops = sum(int(shard.get("ops_total") or 0) for shard in stats.get("shards", []))
    return [
        ("total_connections_received", shared.connections_total),
        ("total_commands_processed", shared.commands_total),
        ("total_error_replies", shared.errors_total),
        ("rejected_connections", shared.connections_refused),
        ("kvcluster_shard_ops_total", shard_ops),
    ]


def _keyspace(stats: dict[str, Any]) -> list[tuple[str, object]]:
    lines: list[tuple[str, object]] = []
    for name, info in sorted(stats.get("namespace_stats", {}).items()):
        keys = int(info.get("keys") or 0)
        if keys:  # as Redis: a database without keys has no line
            lines.append((keyspace_label(name), f"keys={keys},expires=0,avg_ttl=0,namespace={name}"))
    return lines


async def info(ctx: Context, args: list[bytes]) -> Reply:
    wanted = {arg.lower().decode("ascii", "replace") for arg in args[1:]} or {"default"}
    if wanted & {"all", "everything", "default"}:
        wanted = set(_SECTIONS)
    stats = await ctx.shared.client.stats() if wanted & {"server", "stats", "keyspace"} else {}
    blocks = []
    for section in _SECTIONS:
        if section not in wanted:
            continue
        if section == "server":
            lines = _server(ctx, stats)
        elif section == "clients":
            lines = _clients(ctx)
        elif section == "stats":
            lines = _stats(ctx, stats)
        else:
            lines = _keyspace(stats)
        body = "".join(f"{key}:{value}\r\n" for key, value in lines)
        blocks.append(f"# {section.capitalize()}\r\n{body}")
    return "\r\n".join(blocks).encode()


def _command_info(command: Command) -> list[Reply]:
    first, last, step = command.keys
    flags: list[Reply] = [Simple(flag) for flag in command.flags]
    return [command.name.encode(), command.arity, flags, first, last, step, [], [], [], []]


def _arguments(syntax: str) -> list[Reply]:
    """COMMAND DOCS's argument list from a syntax line: `[X]` is optional, `x ...`
    repeats, an upper-case word is a token, `key` a key, anything else a string."""
    words: list[tuple[str, list[Reply]]] = []
    for word in syntax.replace("[", " [").split():
        if word == "...":
            if words:
                words[-1][1].append(Simple("multiple"))
            continue
        words.append((word, [Simple("optional")] if word.startswith("[") or word.endswith("]") else []))
    arguments: list[Reply] = []
    for word, flags in words:
        name = word.strip("[]")
        argument: dict[str | bytes, Reply] = {"name": name.lower().encode()}
        if name.isupper():
            argument.update(type=b"pure-token", token=name.encode())
        else:
            argument["type"] = b"key" if name == "key" else b"string"
        if flags:
            argument["flags"] = flags
        arguments.append(argument)
    return arguments


def _command_doc(command: Command) -> dict[str | bytes, Reply]:
    return {
        "summary": command.summary.encode(),
        "since": b"1.0.0",
        "group": command.group.encode(),
        "complexity": b"O(1) per key",
        "arguments": _arguments(command.syntax),
    }


async def command(ctx: Context, args: list[bytes]) -> Reply:
    table = ctx.shared.table.commands
    if len(args) == 1:
        return [_command_info(c) for c in table.values()]
    sub = args[1].lower()
    names = [arg.lower().decode("utf-8", "replace") for arg in args[2:]]
    if sub == b"count" and not names:
        return len(table)
    if sub == b"docs":
        chosen = [table[name] for name in names if name in table] if names else list(table.values())
        return {c.name.encode(): _command_doc(c) for c in chosen}
    if sub == b"info":
        return [_command_info(table[name]) if name in table else None for name in names]
    if sub == b"list" and not names:
        return [name.encode() for name in table]
    raise unknown_subcommand(args)


def _parameters(ctx: Context) -> dict[str, str]:
    return {
        "save": "",  # no RDB snapshots; kvcluster snapshots are `kvcluster snapshot` / autosave
        "appendonly": "yes",  # every write goes to a shard's journal
        "appendfsync": _APPENDFSYNC.get(ctx.shared.durability, "everysec"),
        "databases": "0",  # namespaces, not numbered databases: see SELECT
        "maxclients": str(ctx.shared.max_connections),
        "proto-max-bulk-len": str(MAX_BULK),
        "maxmemory": "0",
        "timeout": "0",
        "cluster-enabled": "no",
    }


async def config(ctx: Context, args: list[bytes]) -> Reply:
    sub = args[1].lower()
    if sub == b"get" and len(args) >= 3:
        parameters = _parameters(ctx)
        found: dict[str | bytes, Reply] = {}
        for pattern in args[2:]:
            match = compile_glob(pattern.lower())
            for name, value in parameters.items():
                if match(name.encode()):
                    found[name.encode()] = value.encode()
        return found
    if sub == b"get":
        raise CommandError("ERR wrong number of arguments for 'config|get' command")
    if sub in (b"set", b"rewrite", b"resetstat"):
        raise CommandError(f"ERR CONFIG {sub.decode().upper()} is not supported by the kvcluster gateway")
    raise unknown_subcommand(args)


COMMANDS: Final = [
    Command("info", -1, info, "The gateway's and the cluster's figures", "server", (), syntax="[section ...]"),
    Command(
        "command",
        -1,
        command,
        "The commands served (COUNT, DOCS, INFO, LIST)",
        "server",
        (),
        syntax="[subcommand] [name ...]",
    ),
    Command(
        "config",
        -2,
        config,
        "CONFIG GET: what kvcluster does, in Redis's terms",
        "server",
        (),
        syntax="subcommand parameter ...",
    ),
]
