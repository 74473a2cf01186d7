"""Values are stored and sent as msgpack; this module is the one place that encodes them."""

from __future__ import annotations

import functools
from typing import Any

import msgpack

from kvcluster.errors import InvalidRequest, StorageError

__all__ = ["pack_value", "pack_values", "unpack_value", "unpack_values"]

# One Packer, reused: building one per call costs more than packing a small value.
# For the types values may hold, pack() runs entirely in C under the GIL (no Python
# callbacks) and resets its buffer after an error, so threads can share it.
_PACKER = msgpack.Packer(use_bin_type=True, datetime=False, autoreset=True)


def pack_value(value: Any) -> bytes:
    """msgpack bytes of `value`, or InvalidRequest for anything msgpack cannot carry."""
    try:
        return _PACKER.pack(value)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequest(
            f"value of type {type(value).__name__} cannot be stored: {exc} "
            "(values are None, bool, int, float, str, bytes, list or dict)"
        ) from None


def pack_values(values: list[Any]) -> list[bytes]:
    """`pack_value` of each of `values` (one C loop when all of them pack)."""
    try:
        return list(map(_PACKER.pack, values))
    except (TypeError, ValueError, OverflowError):
        return [pack_value(value) for value in values]  # raises for the first that does not


def unpack_value(data: bytes) -> Any:
    """The value msgpack bytes hold. Dict keys may be any msgpack scalar, or tuples."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except TypeError:
        # A tuple key was packed as an array, which decodes to an unhashable list:
        # decode again, turning array keys back into tuples (the rare, slower path).
        pass
    except ValueError as exc:  # every msgpack decoding error is a ValueError
        raise StorageError(f"stored value does not decode: {exc}") from None
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, object_pairs_hook=_dict_with_tuple_keys)
    except (TypeError, ValueError) as exc:
        raise StorageError(f"stored value does not decode: {exc}") from None


_unpack_plain = functools.partial(msgpack.unpackb, raw=False, strict_map_key=False)


def unpack_values(data: list[bytes]) -> list[Any]:
    """`unpack_value` of each of `data` (one C loop when none needs the slow path)."""
    try:
        return list(map(_unpack_plain, data))
    except (TypeError, ValueError):
        return [unpack_value(item) for item in data]  # tuple keys, or a damaged one: say which


def _dict_with_tuple_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {_hashable(key): value for key, value in pairs}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(item) for item in key) if isinstance(key, list) else key
