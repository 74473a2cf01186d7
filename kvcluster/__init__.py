"""kvcluster: a versioned, crash-resilient key-value store for one host that uses every core.

The public face: errors, `Scope`, configuration. The journal on its own is
`kvcluster.journal.VersionedStore`.
"""

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
    StorageError,
    Timeout,
    ValueTooLarge,
)
from kvcluster.scope import Scope

__version__ = "0.1.0"

__all__ = [
    "BatchFailed",
    "ClusterUnavailable",
    "Durability",
    "InvalidRequest",
    "KVError",
    "KeyNotFound",
    "NamespaceExists",
    "NamespaceFull",
    "NamespaceNotFound",
    "Retention",
    "Scope",
    "StorageError",
    "Timeout",
    "ValueTooLarge",
    "__version__",
]
