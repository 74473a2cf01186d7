"""Operations of the local engine that mean nothing on a Redis Cluster, and why."""

from __future__ import annotations

from typing import Final

from kvcluster.errors import InvalidRequest

__all__ = ["unsupported"]

_WHY: Final = {
    "save_snapshot": "snapshots are files a local kvcluster writes on its own host; back up a Redis Cluster with "
    "Redis's own persistence (RDB or AOF files of each primary)",
    "load_snapshot": "snapshots are files of a local kvcluster; to move one into a Redis Cluster, load it into a "
    "local cluster and copy its namespaces over (docs/redis-cluster.md, Moving)",
    "autosave": "autosave writes local snapshot files; configure Redis's own `save` or `appendonly` instead",
    "rotate_journals": "a Redis Cluster keeps no kvcluster journal (Redis rewrites its own AOF: BGREWRITEAOF)",
    "resize": "Redis Cluster grows by adding primaries and moving slots (`redis-cli --cluster add-node`, "
    "`redis-cli --cluster reshard`)",
    "shutdown": "kvcluster does not stop a Redis Cluster it did not start; stop its redis-server processes",
}


def unsupported(operation: str) -> InvalidRequest:
    """The error for `operation`, which the Redis Cluster backend does not serve."""
    return InvalidRequest(f"{operation} has no meaning on a Redis Cluster: {_WHY[operation]}")
