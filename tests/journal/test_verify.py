"""`kvcluster verify`: valid data says so; damage is named by file and offset; --fix
cuts only a torn tail, and never under a running store."""

from __future__ import annotations

import os

from click.testing import CliRunner

from kvcluster.cli import main as cli
from kvcluster.journal import VersionedStore


def populate(directory: str, count: int = 20, rotate: bool = True) -> int:
    with VersionedStore.open(directory) as store:
        for i in range(count):
            store.set("ns", f"k{i}", i)
        if rotate:
            store.rotate()
            store.set("ns", "after", 1)
        return int(store.stats()["journal_bytes"])


def verify(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["verify", *args])
    return result.exit_code, result.output


def test_clean_cluster_layout_is_valid(tmp_path: object) -> None:
    root = str(tmp_path)
    for shard in ("shard-000", "shard-001"):
        populate(os.path.join(root, shard))
    code, output = verify(root)
    assert code == 0, output
    assert output.count("ok ") == 4  # two journals and two archives
    assert output.strip().endswith("valid: 4 files")
    assert verify("--data-dir", root)[0] == 0


def test_torn_tail_is_named_and_fixed_by_fix(store_dir: str) -> None:
    end = populate(store_dir, rotate=False)
    journal = os.path.join(store_dir, "journal")
    with open(journal, "r+b") as f:
        f.seek(end - 4)
        f.write(bytes(4))
    code, output = verify(store_dir)
    assert code == 1
    assert f"DAMAGED  {journal}: torn tail at byte" in output
    assert "--fix" in output
    code, output = verify(store_dir, "--fix")
    assert code == 0, output
    assert "fixed" in output
    code, output = verify(store_dir)
    assert code == 0
    with VersionedStore.open(store_dir) as store:
        assert store.count() == 19
        assert store.damage == ()


def test_corruption_is_reported_and_fix_refuses_to_cut_it(store_dir: str) -> None:
    populate(store_dir, rotate=False)
    journal = os.path.join(store_dir, "journal")
    with open(journal, "r+b") as f:
        f.seek(60)
        f.write(b"\xff")
    with open(journal, "rb") as f:
        before = f.read()
    code, output = verify(store_dir, "--fix")
    assert code == 1
    assert f"{journal}: corruption at byte 58" in output  # record 1 starts at 32 + 26
    with open(journal, "rb") as f:
        assert f.read() == before


def test_fix_refuses_while_the_store_is_open(store_dir: str) -> None:
    end = populate(store_dir, rotate=False)
    with open(os.path.join(store_dir, "journal"), "r+b") as f:
        f.seek(end - 1)
        f.write(b"\x00")
    store = VersionedStore.open(store_dir)  # cuts the tail itself, then holds the lock
    try:
        with open(os.path.join(store_dir, "journal"), "r+b") as f:
            f.seek(store.stats()["journal_bytes"] + 3)
            f.write(b"\x01")  # a stray byte right after the records: looks torn
        code, output = verify(store_dir, "--fix")
        assert code == 1
        assert "open; stop it first" in output
    finally:
        store.close()


def test_nothing_to_verify_is_an_error(tmp_path: object) -> None:
    code, output = verify(str(tmp_path))
    assert code == 1
    assert "no journal or archive found" in output
