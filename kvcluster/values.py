"""Values are stored and sent as msgpack; this module is the one place that encodes them."""

from __future__ import annotations

from typing import Any

import msgpack

from kvcluster.errors import InvalidRequest, StorageError

__all__ = ["pack_value", "unpack_value"]

_packer_options = {"use_bin_type": True, "datetime": False}


def pack_value(value: Any) -> bytes:
    """msgpack bytes of `value`, or InvalidRequest for anything msgpack cannot carry."""
    try:
        return msgpack.packb(value, **_packer_options)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequest(
            f"value of type {type(value).__name__} cannot be stored: {exc} "
            "(values are None, bool, int, float, str, bytes, list or dict)"
        ) from None


def unpack_value(data: bytes) -> Any:
    """The value msgpack bytes hold. Dict keys may be any msgpack scalar."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, TypeError) as exc:  # msgpack's errors are ValueErrors; TypeError: unhashable map key
        raise StorageError(f"stored value does not decode: {exc}") from None
