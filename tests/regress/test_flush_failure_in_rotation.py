"""Regression: a failed flush of the retiring journal during rotation left the store
writable, so a later msync retry could seem to succeed after the kernel dropped pages."""

from __future__ import annotations

import pytest
from kvtest.faults import FaultyFS

from kvcluster import StorageError
from kvcluster.journal import VersionedStore


def test_flush_failure_during_rotation_makes_the_store_read_only(store_dir: str) -> None:
    # flush calls: 1 creating the first journal, 2 the retiring journal at rotation
    store = VersionedStore.open(store_dir, buffer_size=4096, fs=FaultyFS({"flush": 2}))
    ts = store.set("ns", "k", 1)
    with pytest.raises(StorageError, match="injected flush failure"):
        store.rotate()
    with pytest.raises(StorageError, match="read-only"):
        store.set("ns", "k2", 2)
    assert store.stats()["read_only"]
    store.close()
    with VersionedStore.open(store_dir, buffer_size=4096) as reopened:
        assert reopened.get("ns", "k") == (1, ts)
