"""Which shard owns a key: jump consistent hash (Lamping & Veach, 2014) over xxhash64.

The digest is xxh64 of `namespace + b"\\0" + key` (namespace names never hold a zero
byte, so the pair is unambiguous), the same in every process and on every host —
unlike Python's built-in `hash()`, which is salted per process. Growing from n to
n + 1 shards moves only the keys whose bucket becomes n: about 1/(n + 1) of them.
"""

from __future__ import annotations

import xxhash

__all__ = ["jump_hash", "key_digest", "shard_for"]

_MULTIPLIER = 2862933555777941757
_MASK = (1 << 64) - 1
_xxh64 = xxhash.xxh64_intdigest


def key_digest(ns: bytes, key: bytes) -> int:
    """The stable 64-bit digest of a (namespace, key) pair."""
    return _xxh64(ns + b"\0" + key)


def jump_hash(digest: int, buckets: int) -> int:
    """The bucket in [0, buckets) for a 64-bit digest."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, not {buckets}")
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        digest = (digest * _MULTIPLIER + 1) & _MASK
        jump = int((bucket + 1) * (float(1 << 31) / float((digest >> 33) + 1)))
    return bucket


def shard_for(ns: bytes, key: bytes, shards: int) -> int:
    """The shard that owns `key` in namespace `ns` among `shards` shards."""
    if shards == 1:
        return 0
    return jump_hash(_xxh64(ns + b"\0" + key), shards)
