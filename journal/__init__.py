"""The on-disk journal: one shard's durable state, usable on its own.

`VersionedStore` is a versioned, crash-resilient key-value store in one directory
(the Python equivalent of bd-resilient-kv); `recover_at` rebuilds its state at any
moment its kept history covers. Pure: no sockets, no processes.
"""

from kvcluster.journal.pitr import earliest_recoverable, recover_at
from kvcluster.journal.reader import Damage
from kvcluster.journal.store import StoreOptions, VersionedStore

__all__ = ["Damage", "StoreOptions", "VersionedStore", "earliest_recoverable", "recover_at"]
