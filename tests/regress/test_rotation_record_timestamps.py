"""Regression: the write that triggered a rotation took its timestamp before the cut,
so it landed after the compacted prefix with a timestamp below the journal's base_ts."""

from __future__ import annotations

import os

from kvcluster.journal import VersionedStore
from kvcluster.journal.format import decode_header
from kvcluster.journal.reader import RecordScan


def test_records_after_the_prefix_are_newer_than_the_cut(store_dir: str) -> None:
    with VersionedStore.open(store_dir, buffer_size=4096) as store:
        prefix = 0
        for i in range(800):
            live, rotations = store.count(), store.rotations
            if i % 2:
                store.delete("ns", f"k{(i // 2 + 2) % 5}")
            else:
                store.set("ns", f"k{i // 2 % 5}", i)
            if store.rotations != rotations:  # this write rotated: the prefix holds `live` keys
                prefix = live
        assert store.rotations > 3
    with open(os.path.join(store_dir, "journal"), "rb") as f:
        data = f.read()
    base = decode_header(data).base_ts
    stamps = [ts for _t, _ns, _k, ts, _v in RecordScan(data, "journal")]
    assert prefix > 0
    assert all(ts <= base for ts in stamps[:prefix])
    assert all(ts > base for ts in stamps[prefix:])
    assert stamps[prefix:] == sorted(stamps[prefix:])
