"""What batches do alike on both backends — the local engine (client/batches.py) and a
Redis Cluster (rediscluster/batches.py, rediscluster/txn.py): check their input before
anything is sent, and shape their outcome, in input order, as a `BatchResult` or a
`BatchFailed`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from kvcluster.batch import BatchMode, BatchResult
from kvcluster.errors import BatchFailed, InvalidRequest, KeyNotFound, KVError
from kvcluster.keys import encode_keys

__all__ = [
    "MISSING",
    "batch_failed",
    "batch_result",
    "checked_mode",
    "missing_key",
    "read_keys",
    "set_pairs",
    "write_keys",
]

MISSING: Final = object()  # no data for this item: it was not applied or read


# -- input -------------------------------------------------------------------------------


def checked_mode(mode: Any) -> BatchMode:
    if not isinstance(mode, BatchMode):
        raise InvalidRequest(f"mode must be a kvcluster.BatchMode, not {mode!r}")
    return mode


def write_keys(keys: Iterable[Any]) -> tuple[list[Any], list[bytes]]:
    """The keys of a write batch, listed, and their UTF-8 form; each may appear once."""
    listed = list(keys)
    raw = encode_keys(listed)
    if len(set(raw)) != len(raw):
        raise InvalidRequest("a batch names each key once")
    return listed, raw


def read_keys(keys: Iterable[Any]) -> tuple[list[Any], list[bytes]]:
    """The keys of a `get_many`, listed, and their UTF-8 form; a key asked twice is read once."""
    listed = list(keys)
    raw = encode_keys(listed)  # a clear error for a bad key before anything is sent
    if len(set(raw)) != len(raw):
        listed = list(dict.fromkeys(listed))
        raw = encode_keys(listed)
    return listed, raw


def set_pairs(items: Any) -> tuple[list[Any], list[Any]]:
    """The keys and the values of a `set_many`: from a mapping, or from (key, value) pairs."""
    if isinstance(items, Mapping):
        return list(items.keys()), list(items.values())
    pairs = list(items)
    if pairs and (set(map(type, pairs)) - {tuple, list} or set(map(len, pairs)) != {2}):
        raise InvalidRequest("set_many takes a mapping, or (key, value) pairs")
    return [pair[0] for pair in pairs], [pair[1] for pair in pairs]


# -- outcome -----------------------------------------------------------------------------


def missing_key(key: Any) -> KeyNotFound:
    return KeyNotFound(f"key {key!r} does not exist")


def batch_result(keys: list[Any], data: list[Any], errors: dict[int, KVError]) -> BatchResult:
    """The result, in input order; `data[i]` is MISSING for an item not applied or read
    (and only for such an item: one with an error)."""
    if not errors:
        ordered = dict(zip(keys, data, strict=True))
        return BatchResult(len(ordered), ordered)
    ordered = {key: item for key, item in zip(keys, data, strict=True) if item is not MISSING}
    failed = {keys[i]: errors[i] for i in sorted(errors)}
    return BatchResult(len(ordered), ordered, failed)


def batch_failed(
    keys: list[Any], errors: dict[int, KVError], what: str, outcome: str = "nothing was applied"
) -> BatchFailed:
    """BatchFailed listing, in input order, the keys that kept the batch from applying."""
    failed = {keys[i]: errors[i] for i in sorted(errors)}
    first = next(iter(failed.items()))
    return BatchFailed(
        f"{what}: {len(failed)} of {len(keys)} keys failed (first {first[0]!r}: {first[1]}); {outcome}", failed
    )
