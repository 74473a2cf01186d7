"""Where a client connects: a data directory, a coordinator endpoint, or a router address.

`kvcluster.connect("./kv-data")` reads the manifest to find the coordinator (and, if
the coordinator is briefly down, the shards straight from it); `"tcp://host:port"`
is a router, which routes for clients that cannot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from kvcluster.codec import DEFAULT_MAX_MESSAGE
from kvcluster.curve import ClientKeys
from kvcluster.datadir import DataDir
from kvcluster.errors import ClusterUnavailable, InvalidRequest
from kvcluster.router.clustermap import ClusterMap
from kvcluster.router.proxy import ADMIN_TARGET

__all__ = ["LinkPlan", "Target", "map_from_answer", "resolve"]


@dataclass(frozen=True)
class Target:
    address: str  # what the user gave, kept for pickling proxies
    admin_endpoint: str  # the coordinator, or the router
    via_router: bool  # every request goes through the router, tagged with its target
    data_dir: str | None = None
    keys: ClientKeys | None = None  # CURVE keys for a router that asks for them

    @property
    def key_paths(self) -> tuple[str, str] | None:
        """Where the CURVE keys were read from: what a pickled proxy carries."""
        return None if self.keys is None else self.keys.paths

    def link_plan(self, cluster_map: ClusterMap, shard: int) -> LinkPlan:
        """How to reach `shard`: through the router, over its stream, or over ZeroMQ."""
        if self.via_router:
            return LinkPlan("zmq", self.admin_endpoint, str(shard).encode())
        if cluster_map.streams:
            return LinkPlan("stream", cluster_map.streams[shard])  # the local fast path
        return LinkPlan("zmq", cluster_map.endpoints[shard])

    def admin_plan(self) -> LinkPlan:
        """How to reach the coordinator: over its stream when it is local (a data
        directory was given), else over ZeroMQ (its endpoint, or through the router)."""
        if self.data_dir is not None:
            return LinkPlan("stream", DataDir.at(self.data_dir).stream("coordinator"))
        return LinkPlan("zmq", self.admin_endpoint, ADMIN_TARGET if self.via_router else None)

    def fallback_map(self) -> ClusterMap:
        """The map the manifest records, for when the coordinator does not answer (it is
        restarting: the shards still serve). ClusterUnavailable for a router address."""
        fallback = self.manifest_map()
        if fallback is None:
            raise ClusterUnavailable(f"nothing answers at {self.admin_endpoint}")
        return fallback

    def manifest_map(self) -> ClusterMap | None:
        """The cluster map the manifest records (None for a router address)."""
        if self.data_dir is None:
            return None
        manifest = DataDir.at(self.data_dir).read_manifest()
        return ClusterMap(
            manifest["epoch"], tuple(manifest["endpoints"]), self.admin_endpoint, tuple(manifest.get("streams", ()))
        )


@dataclass(frozen=True)
class LinkPlan:
    kind: Literal["zmq", "stream"]
    address: str  # a ZeroMQ endpoint, or a Unix socket path
    tag: bytes | None = None  # the router's routing tag, when going through one


def map_from_answer(info: Any) -> tuple[ClusterMap, int]:
    """The cluster map and the message limit from a CLUSTER_MAP answer."""
    return ClusterMap.from_wire(info), int(info.get("max_message", DEFAULT_MAX_MESSAGE))


def resolve(address: str | os.PathLike[str], key_paths: tuple[Any, Any] | None = None) -> Target:
    """Where `address` leads. `key_paths`: (this client's NAME.key_secret, the cluster's
    server.key), for a router with CURVE; both or neither."""
    text = os.fspath(address)
    keys = None
    if key_paths is not None and key_paths != (None, None):
        if None in key_paths:
            raise InvalidRequest("CURVE needs both key (this client's NAME.key_secret) and server_key")
        if not text.startswith("tcp://"):
            raise InvalidRequest("CURVE keys are for a router's tcp:// address; local clients need none")
        keys = ClientKeys.load(*key_paths)
    if text.startswith("tcp://"):
        return Target(text, text, via_router=True, keys=keys)
    if text.startswith("ipc://"):
        return Target(text, text, via_router=False)  # a coordinator's own endpoint
    if "://" in text:
        raise InvalidRequest(f"unsupported address {text!r}: use a data directory or tcp://host:port")
    data = DataDir.at(text)
    data.read_manifest()  # ClusterUnavailable now, with a clear message, if there is no cluster
    return Target(text, data.endpoint("coordinator"), via_router=False, data_dir=data.root)
