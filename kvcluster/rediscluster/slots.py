"""Redis Cluster's key -> hash slot function (CRC16/XMODEM of the key or of its hash
tag, modulo 16384), so the client knows which keys one script may touch together,
and its inverse for hash tags: a short tag that puts a key in a chosen slot."""

from __future__ import annotations

import functools
from binascii import crc_hqx
from typing import Final

__all__ = ["SLOTS", "key_slot", "slot_tag"]

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


@functools.cache
def slot_tag(slot: int) -> bytes:
    """The first of "0", "1", "2", ... whose slot is `slot`: `{tag}` in a key puts the
    key in that slot (a txn record beside its batch's first key). About 16,384 tries,
    a few milliseconds, once per slot per process."""
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot {slot} is not in 0..{SLOTS - 1}")
    n = 0
    while True:
        tag = str(n).encode()
        if crc_hqx(tag, 0) % SLOTS == slot:
            return tag
        n += 1
