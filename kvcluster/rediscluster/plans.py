"""Plans: the Redis Cluster backend's operations, written once for both clients.

A plan is a generator. It yields a step — a list of Redis commands to send at once
(the sync client pipelines them, node by node; the asyncio client awaits the same
pipeline) — and is sent back each command's result, or the `KVError` it raised; it
returns the operation's value. The plans hold every rule of the backend; the two
clients only move commands (kvcluster/rediscluster/sync.py and aio.py). A plan that
must wait (for another client's batch to finish: locks.py) yields a `Pause`, an
empty step the client answers with [] after sleeping that long.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple, TypeVar

from kvcluster.errors import KVError

__all__ = ["PIPELINE_CHUNK", "READS", "Command", "Pause", "Plan", "Step", "chunked", "pause", "single"]

R = TypeVar("R")

PIPELINE_CHUNK = 4096  # commands in one pipelined step, at most: replies stay small
# Commands that change nothing: safe to send again when a connection broke before the
# answer came. A write is never sent twice by the client (its outcome is the caller's).
READS = frozenset(
    {"GET", "MGET", "GETRANGE", "EXISTS", "SCAN", "HGET", "HKEYS", "HGETALL", "PING", "INFO", "CLUSTER SLOTS", "TIME"}
)


class Command(NamedTuple):
    """One Redis command. `node` names a primary ("host:port") for a command about one
    node (SCAN, DBSIZE, INFO); None routes it by its key, as Redis Cluster does."""

    args: tuple[Any, ...]
    node: str | None = None


Step = list[Command]
Plan = Generator[Step, list[Any], R]


class Pause(list[Command]):
    """A step with no command: the client sleeps `seconds`, then sends the plan []."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds


def pause(seconds: float) -> Plan[None]:
    """Wait `seconds` (asyncio: without blocking the loop)."""
    yield Pause(seconds)


def single(command: Command) -> Plan[Any]:
    """Send one command; its result, or its error raised."""
    (result,) = yield [command]
    if isinstance(result, KVError):
        raise result
    return result


def chunked(commands: list[Command]) -> Plan[list[Any]]:
    """Send many commands, PIPELINE_CHUNK to a step; every result or error, in order."""
    results: list[Any] = []
    for start in range(0, len(commands), PIPELINE_CHUNK):
        results.extend((yield commands[start : start + PIPELINE_CHUNK]))
    return results
