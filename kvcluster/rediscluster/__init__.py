"""The Redis Cluster backend: kvcluster's client API on an existing distributed engine.

    client = kvcluster.connect("redis+cluster://127.0.0.1:7000")
    users = client.create_namespace("users")
    ts = users.set("u:1", {"name": "Alice"})

    client = await kvcluster.connect_async("redis+cluster://127.0.0.1:7000")

The same `Client`/`Namespace` API (and its asyncio twin) runs on a Redis Cluster
through redis-py (`pip install 'kvcluster[redis]'`). docs/redis-cluster.md describes
the stored layout, the scripts, and what differs from the local engine. Only the
address parsing and the layout import without redis-py; `connect` says what to
install when it is missing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from kvcluster.errors import InvalidRequest
from kvcluster.rediscluster.address import SCHEME, is_redis_cluster

if TYPE_CHECKING:
    from kvcluster.rediscluster.aio import AsyncRedisClusterClient
    from kvcluster.rediscluster.sync import RedisClusterClient

__all__ = ["SCHEME", "connect", "connect_async", "is_redis_cluster"]

DEFAULT_TIMEOUT = 10.0


def _require_redis() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        raise InvalidRequest("the Redis Cluster backend needs redis-py: pip install 'kvcluster[redis]'") from None


def connect(address: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT) -> RedisClusterClient:
    """A client of the Redis Cluster at `address` (redis+cluster://host:port[,host:port...])."""
    _require_redis()
    from kvcluster.rediscluster.sync import RedisClusterClient

    return RedisClusterClient(address, timeout=timeout)


async def connect_async(
    address: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT
) -> AsyncRedisClusterClient:
    """The asyncio twin of `connect`."""
    _require_redis()
    from kvcluster.rediscluster.aio import AsyncRedisClusterClient

    return await AsyncRedisClusterClient.connect(address, timeout=timeout)
