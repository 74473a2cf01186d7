"""Regression: set_raw accepted an empty value, whose PUT record the reader rejects, so
the next open cut the journal there and lost every later acknowledged write."""

from __future__ import annotations

import pytest

from kvcluster import InvalidRequest
from kvcluster.journal import VersionedStore


def test_an_empty_raw_value_is_refused_and_later_writes_survive(store_dir: str) -> None:
    with VersionedStore.open(store_dir) as store:
        with pytest.raises(InvalidRequest, match="at least one byte"):
            store.set_raw(b"ns", b"k", b"")
        ts = store.set("ns", "after", 1)
    with VersionedStore.open(store_dir) as store:
        assert store.damage == ()
        assert store.get("ns", "after") == (1, ts)
