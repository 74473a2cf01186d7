"""Redis Cluster's key -> hash slot function (CRC16/XMODEM of the key or of its hash
tag, modulo 16384), so the client knows which keys one script may touch together."""

from __future__ import annotations

from binascii import crc_hqx
from typing import Final

__all__ = ["SLOTS", "key_slot"]

SLOTS: Final = 16384


def key_slot(key: bytes) -> int:
    """The slot of `key`: of the part between its first `{` and the next `}`, when that
    part is not empty; else of the whole key (the rule of the Redis Cluster spec)."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) % SLOTS
