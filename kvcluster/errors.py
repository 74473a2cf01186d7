"""The one exception tree of kvcluster: everything raised on purpose is a `KVError`.

Each class carries a stable `code`; on the wire an error travels as that code plus a
message, and only the client turns codes back into exceptions (`error_for_code`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

__all__ = [
    "BatchFailed",
    "ClusterUnavailable",
    "InvalidRequest",
    "KVError",
    "KeyNotFound",
    "NamespaceExists",
    "NamespaceFull",
    "NamespaceNotFound",
    "SnapshotError",
    "StorageError",
    "Timeout",
    "ValueTooLarge",
    "error_for_code",
]


class KVError(Exception):
    """Root of every error kvcluster raises on purpose."""

    code: ClassVar[str] = "error"


class KeyNotFound(KVError, KeyError):
    """The key does not exist (also a `KeyError`, so mapping code works unchanged)."""

    code = "key_not_found"

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return Exception.__str__(self)


class NamespaceNotFound(KVError):
    code = "namespace_not_found"


class NamespaceExists(KVError):
    code = "namespace_exists"


class NamespaceFull(KVError):
    """The namespace is at `max_keys`; updating an existing key is still allowed."""

    code = "namespace_full"


class ValueTooLarge(KVError):
    code = "value_too_large"


class InvalidRequest(KVError):
    """Bad input: a wrong type, an empty or oversized key, a value msgpack cannot carry."""

    code = "invalid_request"


class BatchFailed(KVError):
    """An ALL_OR_NOTHING batch did not apply; `errors` maps each failing key to its error."""

    code = "batch_failed"

    def __init__(self, message: str, errors: Mapping[str, KVError] | None = None) -> None:
        super().__init__(message)
        self.errors: dict[str, KVError] = dict(errors or {})


class StorageError(KVError):
    """Disk full, an I/O error, or damaged files.

    A write that raised this was not acknowledged; nothing acknowledged before it is
    lost. `path`, `offset` and `timestamp` say where, when they are known.
    """

    code = "storage_error"

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        offset: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset
        self.timestamp = timestamp


class SnapshotError(KVError):
    """A snapshot file is damaged, truncated, or not a kvcluster snapshot.

    `path` and `offset` say which file and where in it, when they are known.
    """

    code = "snapshot_error"

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset


class ClusterUnavailable(KVError):
    code = "cluster_unavailable"


class Timeout(KVError, TimeoutError):
    """No answer within the deadline. The outcome of a timed-out write is unknown."""

    code = "timeout"


_BY_CODE: dict[str, type[KVError]] = {
    cls.code: cls
    for cls in (
        KVError,
        KeyNotFound,
        NamespaceNotFound,
        NamespaceExists,
        NamespaceFull,
        ValueTooLarge,
        InvalidRequest,
        BatchFailed,
        StorageError,
        SnapshotError,
        ClusterUnavailable,
        Timeout,
    )
}


def error_for_code(code: str, message: str) -> KVError:
    """Rebuild the exception a peer reported; unknown codes become a plain `KVError`."""
    return _BY_CODE.get(code, KVError)(message)
