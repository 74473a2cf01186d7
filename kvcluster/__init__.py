"""kvcluster: a versioned, crash-resilient key-value store for one host that uses every core.

    with kvcluster.start(data_dir="./kv-data", shards=4) as cluster:
        users = cluster.connect().create_namespace("users")
        users.set("u:1", {"name": "Alice"})

The journal on its own is `kvcluster.journal.VersionedStore`.
"""

from kvcluster.batch import BatchMode, BatchResult
from kvcluster.client.aio import AsyncClient, AsyncNamespace
from kvcluster.client.namespace import Namespace
from kvcluster.client.sync import Client
from kvcluster.cluster import Cluster, connect, connect_async, start
from kvcluster.config import Durability, Retention
from kvcluster.errors import (
    BatchFailed,
    ClusterUnavailable,
    InvalidRequest,
    KeyNotFound,
    KVError,
    NamespaceExists,
    NamespaceFull,
    NamespaceNotFound,
    SnapshotError,
    StorageError,
    Timeout,
    ValueTooLarge,
)
from kvcluster.pitr import recover
from kvcluster.scope import Scope

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncNamespace",
    "BatchFailed",
    "BatchMode",
    "BatchResult",
    "Client",
    "Cluster",
    "ClusterUnavailable",
    "Durability",
    "InvalidRequest",
    "KVError",
    "KeyNotFound",
    "Namespace",
    "NamespaceExists",
    "NamespaceFull",
    "NamespaceNotFound",
    "Retention",
    "Scope",
    "SnapshotError",
    "StorageError",
    "Timeout",
    "ValueTooLarge",
    "__version__",
    "connect",
    "connect_async",
    "recover",
    "start",
]
