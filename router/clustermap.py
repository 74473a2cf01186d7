"""The cluster map: how many shards, where each listens, and the epoch that versions it.

Every routed request carries the epoch its sender routed with. A shard whose epoch
differs answers "stale epoch" without applying anything, and the sender fetches the
map again: a key is never served by a shard that does not own it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvcluster.errors import InvalidRequest
from kvcluster.router.jump import shard_for, shards_for

__all__ = ["ClusterMap"]


@dataclass(frozen=True)
class ClusterMap:
    epoch: int
    endpoints: tuple[str, ...]  # shard i's ZeroMQ socket
    coordinator: str
    streams: tuple[str, ...] = ()  # shard i's local fast path (a Unix socket path); empty when remote

    @property
    def shards(self) -> int:
        return len(self.endpoints)

    def shard_for(self, ns: bytes, key: bytes) -> int:
        return shard_for(ns, key, len(self.endpoints))

    def shards_for(self, ns: bytes, keys: list[bytes]) -> list[int]:
        return shards_for(ns, keys, len(self.endpoints))

    def to_wire(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "endpoints": list(self.endpoints),
            "coordinator": self.coordinator,
            "streams": list(self.streams),
        }

    @classmethod
    def from_wire(cls, data: Any) -> ClusterMap:
        try:
            epoch, endpoints, coordinator = data["epoch"], data["endpoints"], data["coordinator"]
        except (TypeError, KeyError):
            raise InvalidRequest(f"not a cluster map: {data!r:.200}") from None
        if (
            type(epoch) is not int
            or epoch < 1
            or not isinstance(endpoints, list)
            or not endpoints
            or not all(isinstance(e, str) for e in endpoints)
            or not isinstance(coordinator, str)
        ):
            raise InvalidRequest(f"malformed cluster map: {data!r:.200}")
        streams = data.get("streams") or []
        if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
            raise InvalidRequest(f"malformed cluster map: {data!r:.200}")
        if streams and len(streams) != len(endpoints):
            raise InvalidRequest("a cluster map lists one stream per shard, or none")
        return cls(epoch, tuple(endpoints), coordinator, tuple(streams))
