"""Process faults on a live cluster: find its processes, kill -9 or pause one (chosen,
or at random). Named points inside a process are armed with kvcluster.failpoints.arm."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kvcluster import Client, Cluster, KVError

__all__ = [
    "kill_random_live_shard",
    "paused",
    "point_taken",
    "processes",
    "restarted",
    "serving",
    "shard_pid",
    "shard_pids",
]


def shard_pids(cluster: Cluster) -> list[int | None]:
    """Each shard's pid, None while it is being restarted."""
    with cluster.connect() as client:
        return [shard["pid"] for shard in client.stats()["shards"]]


def shard_pid(cluster: Cluster, shard: int) -> int | None:
    return shard_pids(cluster)[shard]


def processes(client: Client) -> dict[str, int | None]:
    """The coordinator's pid and each shard's, by name ("coordinator", "shard.N")."""
    stats = client.stats()
    return {"coordinator": stats["coordinator"]["pid"], **{f"shard.{s['id']}": s["pid"] for s in stats["shards"]}}


def serving(client: Client) -> dict[str, Any] | None:
    """The cluster's stats once the coordinator and every shard serve; None until then."""
    try:
        stats: dict[str, Any] = client.stats()
    except KVError:
        return None
    ready = stats["ready"] and all(shard["ready"] and shard["pid"] for shard in stats["shards"])
    return stats if ready else None


def point_taken(directory: Path, name: str) -> bool:
    """A point armed with kvcluster.failpoints.arm has been reached (its file is gone)."""
    return not (directory / name).exists()


def restarted(cluster: Cluster, shard: int, old: int) -> bool:
    """The shard serves again from a new process (for wait_until)."""
    try:
        return shard_pid(cluster, shard) not in (None, old)
    except KVError:
        return False


def kill_random_live_shard(cluster: Cluster, rng: random.Random, killed: set[int]) -> int | None:
    """kill -9 a shard chosen at random among those serving now, never one in `killed`
    (a victim the coordinator has not yet seen die is still listed: killing it again
    would do nothing). Adds the victim to `killed` and returns it; None if no shard
    serves at this moment."""
    with cluster.connect() as client:
        shards = client.stats()["shards"]
    live = [s["pid"] for s in shards if s["pid"] is not None and s["ready"] and s["pid"] not in killed]
    if not live:
        return None
    victim: int = rng.choice(live)
    os.kill(victim, signal.SIGKILL)
    killed.add(victim)
    return victim


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """SIGSTOP `pid` for the block (a process that stops answering but keeps its
    sockets: a long GC, a swapped-out page, a debugger), then SIGCONT."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
