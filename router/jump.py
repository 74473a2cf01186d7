"""Which shard owns a key: jump consistent hash (Lamping & Veach, 2014) over xxhash64.

The digest is xxh64 of `namespace + b"\\0" + key` (namespace names never hold a zero
byte, so the pair is unambiguous), the same in every process and on every host —
unlike Python's built-in `hash()`, which is salted per process. Growing from n to
n + 1 shards moves only the keys whose bucket becomes n: about 1/(n + 1) of them.
"""

from __future__ import annotations

from typing import Final

import xxhash

__all__ = ["jump_hash", "key_digest", "shard_for", "shards_for"]

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


ROUTE_CACHE_KEYS: Final = 1 << 16  # routes remembered per shard count (~8 MiB at most)
_routes: dict[int, dict[bytes, int]] = {}  # shard count -> {namespace \0 key: shard}


def shards_for(ns: bytes, keys: list[bytes], shards: int) -> list[int]:
    """`shard_for` of many keys of one namespace (a batch).

    The jump loop costs ~0.7 µs a key in Python (its 64-bit products are big ints),
    more than everything else a batch does per key; so routes are remembered, up to
    ROUTE_CACHE_KEYS per shard count (then forgotten all at once), and a key sent
    again is routed by one dictionary lookup.
    """
    if shards == 1:
        return [0] * len(keys)
    routes = _routes.get(shards)
    if routes is None:
        routes = _routes[shards] = {}
    prefix = ns + b"\0"
    names = [prefix + key for key in keys]
    out: list[int | None] = list(map(routes.get, names))
    if None not in out:
        return out  # type: ignore[return-value]  # every one known
    xxh64, multiplier, mask, scale = _xxh64, _MULTIPLIER, _MASK, float(1 << 31)
    for i, name in enumerate(names):
        if out[i] is None:
            digest = xxh64(name)
            bucket, jump = -1, 0
            while jump < shards:
                bucket = jump
                digest = (digest * multiplier + 1) & mask
                jump = int((bucket + 1) * (scale / float((digest >> 33) + 1)))
            if len(routes) >= ROUTE_CACHE_KEYS:
                routes.clear()
            routes[name] = out[i] = bucket
    return out  # type: ignore[return-value]  # every one filled in


def shard_for(ns: bytes, key: bytes, shards: int) -> int:
    """The shard that owns `key` in namespace `ns` among `shards` shards."""
    if shards == 1:
        return 0
    return jump_hash(_xxh64(ns + b"\0" + key), shards)
