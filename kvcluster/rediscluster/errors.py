"""redis-py's exceptions turned into kvcluster's: callers see only `KVError`s."""

from __future__ import annotations

from redis import exceptions as redis_errors

from kvcluster.errors import ClusterUnavailable, InvalidRequest, KVError, StorageError, Timeout

__all__ = ["REDIS_ERRORS", "is_lost_connection", "is_noscript", "translate"]

# What redis-py raises when a command fails (RedisClusterException is not a RedisError).
REDIS_ERRORS = (redis_errors.RedisError, redis_errors.RedisClusterException)

_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.ClusterDownError,
    redis_errors.ClusterError,
    redis_errors.MasterDownError,
    redis_errors.TryAgainError,
    redis_errors.SlotNotCoveredError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.RedisClusterException,
)


def is_noscript(error: BaseException) -> bool:
    return isinstance(error, redis_errors.NoScriptError)


def is_lost_connection(error: BaseException) -> bool:
    """A connection that broke (not a timeout: a command that timed out may have run)."""
    return isinstance(error, redis_errors.ConnectionError) and not isinstance(error, redis_errors.AuthenticationError)


def translate(error: BaseException) -> KVError:
    """The kvcluster error for an exception raised while talking to Redis."""
    if isinstance(error, KVError):
        return error
    if isinstance(error, redis_errors.TimeoutError):
        return Timeout(f"Redis Cluster did not answer in time ({error}); a write's outcome is unknown")
    if isinstance(error, _UNAVAILABLE):
        return ClusterUnavailable(f"Redis Cluster is unavailable: {type(error).__name__}: {error}")
    if isinstance(error, redis_errors.OutOfMemoryError):
        return StorageError(f"Redis is out of memory (maxmemory): {error}")
    if isinstance(error, redis_errors.ClusterCrossSlotError):
        return InvalidRequest(f"Redis Cluster refused keys of several slots in one command: {error}")
    if isinstance(error, redis_errors.ResponseError):
        message = str(error)
        if "KVCLUSTER " in message:
            return StorageError(message.split("KVCLUSTER ", 1)[1].split(" script:", 1)[0])
        if message.startswith("WRONGTYPE"):
            return StorageError(f"a Redis key of this namespace does not hold a kvcluster record ({message})")
        if message.startswith("OOM"):
            return StorageError(f"Redis is out of memory (maxmemory): {message}")
        if message.startswith("CROSSSLOT"):
            return InvalidRequest(f"Redis Cluster refused keys of several slots in one command: {message}")
        if message.startswith(("LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY")):
            return ClusterUnavailable(f"Redis Cluster is unavailable: {message}")
        return KVError(f"Redis refused the command: {message}")
    if isinstance(error, redis_errors.RedisError):
        return ClusterUnavailable(f"Redis Cluster: {type(error).__name__}: {error}")
    return ClusterUnavailable(f"Redis Cluster: {type(error).__name__}: {error}")
