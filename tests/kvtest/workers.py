"""Functions that run in worker processes (importable by spawned children)."""

from __future__ import annotations

import os
from typing import Any

from kvcluster import Namespace


def write_range(args: tuple[Namespace, int, int]) -> list[tuple[str, int]]:
    """Set keys [start, stop) through a proxy that was pickled into this process."""
    namespace, start, stop = args
    return [(f"k{i}", namespace.set(f"k{i}", {"i": i, "pid": os.getpid()})) for i in range(start, stop)]


def read_keys(args: tuple[Namespace, list[str]]) -> dict[str, Any]:
    namespace, keys = args
    return {key: namespace.get(key) for key in keys}


def insert_until_full(args: tuple[Namespace, str, int]) -> tuple[int, int]:
    """Insert distinct keys until NamespaceFull; returns (inserted, refusals)."""
    from kvcluster import NamespaceFull

    namespace, prefix, attempts = args
    inserted = refused = 0
    for i in range(attempts):
        try:
            namespace.set(f"{prefix}-{i}", i)
            inserted += 1
        except NamespaceFull:
            refused += 1
    return inserted, refused
