"""`stats()` and `ping()` of the Redis Cluster backend, as plans.

`stats()` answers with the parts of `kvcluster status --json` that mean something on
a Redis Cluster (docs/redis-cluster.md lists them): the address, the primaries (slot
ranges, keys, memory, Redis version) and every namespace with its key count and
limits. Counting the keys scans every primary once.
"""

from __future__ import annotations

from typing import Any

from kvcluster.rediscluster.layout import ALL_VALUES, namespace_of
from kvcluster.rediscluster.plans import Command, Plan, single
from kvcluster.rediscluster.registry import Registry, scan_page

__all__ = ["BACKEND", "cluster_stats", "ping"]

BACKEND = "redis-cluster"


def ping(address: str, nodes: list[str]) -> Plan[dict[str, Any]]:
    for node in nodes:
        yield from single(Command(("PING",), node))
    return {"ready": True, "backend": BACKEND, "address": address, "nodes": list(nodes)}


def cluster_stats(registry: Registry, address: str, nodes: list[str]) -> Plan[dict[str, Any]]:
    entries = yield from registry.entries()
    counts = dict.fromkeys(entries, 0)
    slots = yield from single(Command(("CLUSTER SLOTS",)))
    described = []
    for node in nodes:
        info = yield from single(Command(("INFO",), node))
        keys = 0
        cursor = 0
        while True:
            cursor, page = yield from scan_page(node, cursor, ALL_VALUES)
            for stored in page:
                ns = namespace_of(stored)
                if ns in counts:
                    counts[ns] += 1
                    keys += 1
            if not cursor:
                break
        described.append(
            {
                "id": node,
                "role": "primary",
                "slots": _ranges(slots, node),
                "keys": keys,
                "redis_keys": int(info.get("db0", {}).get("keys", 0)),
                "used_memory": info.get("used_memory"),
                "rss_bytes": info.get("used_memory_rss"),
                "pid": info.get("process_id"),
                "redis_version": info.get("redis_version"),
            }
        )
    return {
        "backend": BACKEND,
        "address": address,
        "ready": True,
        "nodes": described,
        "namespaces": sorted(entries),
        "namespace_stats": {
            name: {"keys": counts[name], "max_keys": limits.max_keys, "max_value_bytes": limits.max_value_bytes}
            for name, limits in entries.items()
        },
    }


def _ranges(slots: Any, node: str) -> list[list[int]]:
    """The slot ranges a primary serves, from redis-py's CLUSTER SLOTS answer."""
    ranges = []
    for (first, last), owners in dict(slots).items():
        host, port = owners["primary"][:2]
        host = host.decode() if isinstance(host, bytes) else host
        if f"{host}:{port}" == node:
            ranges.append([int(first), int(last)])
    return sorted(ranges)
