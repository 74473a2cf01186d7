"""Where a client connects: a data directory, a coordinator endpoint, or a router address.

`kvcluster.connect("./kv-data")` reads the manifest to find the coordinator (and, if
the coordinator is briefly down, the shards straight from it); `"tcp://host:port"`
is a router, which routes for clients that cannot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from kvcluster.datadir import DataDir
from kvcluster.errors import InvalidRequest
from kvcluster.router.clustermap import ClusterMap

__all__ = ["Target", "resolve"]


@dataclass(frozen=True)
class Target:
    address: str  # what the user gave, kept for pickling proxies
    admin_endpoint: str  # the coordinator, or the router
    via_router: bool  # every request goes through the router, tagged with its target
    data_dir: str | None = None

    def manifest_map(self) -> ClusterMap | None:
        """The cluster map the manifest records (None for a router address)."""
        if self.data_dir is None:
            return None
        manifest = DataDir.at(self.data_dir).read_manifest()
        return ClusterMap(
            manifest["epoch"], tuple(manifest["endpoints"]), self.admin_endpoint, tuple(manifest.get("streams", ()))
        )


def resolve(address: str | os.PathLike[str]) -> Target:
    text = os.fspath(address)
    if text.startswith("tcp://"):
        return Target(text, text, via_router=True)
    if text.startswith("ipc://"):
        return Target(text, text, via_router=False)  # a coordinator's own endpoint
    if "://" in text:
        raise InvalidRequest(f"unsupported address {text!r}: use a data directory or tcp://host:port")
    data = DataDir.at(text)
    data.read_manifest()  # ClusterUnavailable now, with a clear message, if there is no cluster
    return Target(text, data.endpoint("coordinator"), via_router=False, data_dir=data.root)
