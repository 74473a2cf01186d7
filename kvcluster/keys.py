"""What a key and a namespace name may be, and their UTF-8 form used everywhere inside."""

from __future__ import annotations

import re

from kvcluster.errors import InvalidRequest

__all__ = ["MAX_KEY_BYTES", "MAX_NAMESPACE_BYTES", "encode_key", "encode_keys", "encode_namespace"]

MAX_KEY_BYTES = 1024
MAX_NAMESPACE_BYTES = 128

# Namespace names appear in file names (snapshot patterns use `{ns}`), so they are
# restricted to characters that are safe there and cannot climb out of a directory.
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")


def encode_key(key: object) -> bytes:
    """UTF-8 bytes of a valid key: a non-empty str of at most MAX_KEY_BYTES bytes."""
    if type(key) is not str:
        raise InvalidRequest(f"keys are str, not {type(key).__name__}")
    try:
        data = key.encode()
    except UnicodeEncodeError:
        raise InvalidRequest("key is not valid Unicode (lone surrogate)") from None
    if not data or len(data) > MAX_KEY_BYTES:
        raise InvalidRequest(f"key must be 1..{MAX_KEY_BYTES} UTF-8 bytes, not {len(data)}")
    return data


def encode_keys(keys: list[object]) -> list[bytes]:
    """`encode_key` of every key of a batch: checked in bulk (C loops) when all are valid."""
    if keys and set(map(type, keys)) == {str}:
        try:
            out = list(map(str.encode, keys))  # type: ignore[arg-type]
        except UnicodeEncodeError:
            raise InvalidRequest("key is not valid Unicode (lone surrogate)") from None
        lengths = list(map(len, out))
        if min(lengths) > 0 and max(lengths) <= MAX_KEY_BYTES:
            return out
    out = []  # one of them is bad: say which way
    try:
        for key in keys:
            if type(key) is not str:
                raise InvalidRequest(f"keys are str, not {type(key).__name__}")
            data = key.encode()
            if not data or len(data) > MAX_KEY_BYTES:
                raise InvalidRequest(f"key must be 1..{MAX_KEY_BYTES} UTF-8 bytes, not {len(data)}")
            out.append(data)
    except UnicodeEncodeError:
        raise InvalidRequest("key is not valid Unicode (lone surrogate)") from None
    return out


class _NamespaceNames(dict[str, bytes]):
    """Names already validated, so each is checked once: programs use few namespaces."""

    LIMIT = 4096

    def __missing__(self, name: str) -> bytes:
        data = _validate_namespace(name)
        if len(self) < self.LIMIT:
            self[name] = data
        return data


_VALID_NAMESPACES = _NamespaceNames()


def encode_namespace(name: object) -> bytes:
    """ASCII bytes of a valid namespace name: letters, digits and `_.:-`, at most 128."""
    if type(name) is not str:
        raise InvalidRequest(f"namespace names are str, not {type(name).__name__}")
    return _VALID_NAMESPACES[name]


def _validate_namespace(name: str) -> bytes:
    if not 0 < len(name) <= MAX_NAMESPACE_BYTES or not _NAMESPACE_RE.fullmatch(name):
        raise InvalidRequest(
            f"namespace name {name!r} must be 1..{MAX_NAMESPACE_BYTES} characters of "
            "letters, digits and _.:- not starting with . : or -"
        )
    return name.encode("ascii")
