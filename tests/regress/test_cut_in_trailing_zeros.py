"""A journal cut inside the trailing zero bytes of its last record loses nothing: the
file is extended with zeros again when it is reopened, so the record comes back whole
and its checksum holds. Cut at a byte that was not zero, the record is dropped.

Regression for the state-machine test's model, which took any cut inside a record to
drop it (hypothesis found a value, -64768, whose msgpack form ends in 0x00)."""

from __future__ import annotations

import os

from kvtest.faults import truncate

from kvcluster.journal import VersionedStore


def test_a_cut_in_trailing_zeros_keeps_the_record_and_one_before_drops_it(store_dir: str) -> None:
    with VersionedStore.open(store_dir, buffer_size=4096) as store:
        ts = store.set("ns", "k0", -64768)  # msgpack d2 ff ff 03 00: the record's last byte is 0
        end = store.stats()["journal_bytes"]
    path = os.path.join(store_dir, "journal")
    with open(path, "rb") as f:
        data = f.read()
    assert data[end - 1] == 0 and data[end - 2] != 0
    truncate(path, end - 1)
    with VersionedStore.open(store_dir, buffer_size=4096) as store:
        assert store.get("ns", "k0") == (-64768, ts)
        assert store.damage == ()
    truncate(path, end - 2)
    with VersionedStore.open(store_dir, buffer_size=4096) as store:
        assert store.get("ns", "k0") is None
