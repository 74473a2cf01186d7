"""Regression: fewer zero bytes than a record header at the very end of a file read as
"truncated record header" damage — on every open at high_water_mark=1.0, and forever
after `verify --fix` of a journal cut mid-record at its end."""

from __future__ import annotations

import os

from click.testing import CliRunner

from kvcluster.cli import main as cli
from kvcluster.journal import VersionedStore
from kvcluster.journal.format import HEADER_SIZE, encode_header, encode_put
from kvcluster.journal.reader import RecordScan


def test_a_few_trailing_zeros_are_the_end() -> None:
    record = encode_put(b"ns", b"k", 1, 1, b"\x01")
    for zeros in range(25):
        scan = RecordScan(encode_header(0) + record + bytes(zeros), "j")
        assert len(list(scan)) == 1
        assert scan.damage is None, zeros
        assert scan.position == HEADER_SIZE + len(record)


def test_full_journal_at_high_water_mark_one_reopens_clean(store_dir: str) -> None:
    for _ in range(3):
        with VersionedStore.open(store_dir, buffer_size=4096, high_water_mark=1.0) as store:
            for i in range(300):
                store.set("ns", f"k{i % 7}", "x" * (i % 13))
    with VersionedStore.open(store_dir, buffer_size=4096, high_water_mark=1.0) as store:
        assert store.damage == ()


def test_verify_fix_of_a_file_cut_mid_record_is_final(store_dir: str) -> None:
    with VersionedStore.open(store_dir, buffer_size=4096) as store:
        for i in range(10):
            store.set("ns", f"k{i}", i)
        end = store.stats()["journal_bytes"]
    os.truncate(os.path.join(store_dir, "journal"), end - 3)
    assert CliRunner().invoke(cli, ["verify", store_dir, "--fix"]).exit_code == 0
    result = CliRunner().invoke(cli, ["verify", store_dir])
    assert result.exit_code == 0, result.output
