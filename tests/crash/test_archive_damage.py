"""Damaged archives are named with an offset and never read partially in silence;
inflating is bounded in memory whatever an archive claims to hold."""

from __future__ import annotations

import os
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from kvcluster import StorageError
from kvcluster.cli import main as cli
from kvcluster.journal import VersionedStore, recover_at
from kvcluster.journal.archive import ArchiveScan, list_archives
from kvcluster.journal.format import HEADER_SIZE, encode_header

pytestmark = pytest.mark.crash


def make_archive(store_dir: str) -> tuple[str, int]:
    with VersionedStore.open(store_dir) as store:
        for i in range(300):
            store.set("ns", f"k{i}", os.urandom(40).hex())
        store.rotate()
        ts = store.set("ns", "after", 1)
    (archive,) = list_archives(store_dir)
    return archive.path, ts


def records_and_damage(path: str) -> tuple[int, ArchiveScan]:
    scan = ArchiveScan(path)
    return sum(1 for _ in scan), scan


def sound_count(path: str) -> int:
    count, scan = records_and_damage(path)
    assert scan.damage is None
    return count


def damage_truncate(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def damage_trailing(data: bytes) -> bytes:
    return data + b"trailing garbage"


def damage_flip(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0x40
    return bytes(out)


def damage_not_zlib(data: bytes) -> bytes:
    return b"this is not zlib data at all" * 10


def damage_empty(data: bytes) -> bytes:
    return b""


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (damage_truncate, "archive truncated"),
        (damage_trailing, "bytes after the end of the compressed stream"),
        (damage_flip, ""),
        (damage_not_zlib, "zlib"),
        (damage_empty, "archive header"),
    ],
)
def test_damaged_archive_is_named_with_an_offset_everywhere(
    store_dir: str, damage: Callable[[bytes], bytes], reason: str
) -> None:
    path, ts = make_archive(store_dir)
    total = sound_count(path)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(damage(data))
    count, scan = records_and_damage(path)
    assert scan.damage is not None
    assert reason in scan.damage.reason
    assert scan.damage.path == path
    assert count < total or damage is damage_trailing
    with pytest.raises(StorageError) as raised:
        recover_at(store_dir, ts)
    assert raised.value.path == path
    result = CliRunner().invoke(cli, ["verify", store_dir])
    assert result.exit_code == 1
    assert f"DAMAGED  {path}: corruption at byte {scan.damage.offset}" in result.output


def bomb(path: str, fill: bytes, inflated: int) -> None:
    """An archive of a journal header followed by `inflated` bytes of `fill`."""
    packer = zlib.compressobj(9)
    chunk = fill * (1 << 20)
    with open(path, "wb") as f:
        f.write(packer.compress(encode_header(0)))
        for _ in range(inflated >> 20):
            f.write(packer.compress(chunk))
        f.write(packer.flush())


@pytest.mark.slow
@pytest.mark.parametrize("fill", [b"\x00", b"\xff"])
def test_zip_bombs_inflate_in_bounded_memory(tmp_path: object, fill: bytes) -> None:
    path = os.path.join(str(tmp_path), "journal.t1.zz")
    inflated = 256 << 20
    bomb(path, fill, inflated)
    assert os.path.getsize(path) < inflated // 500
    tracemalloc.start()
    try:
        count, scan = records_and_damage(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 0
    assert peak < 8 << 20, f"inflating used {peak} bytes"
    assert scan.length == HEADER_SIZE + inflated
    if fill == b"\xff":
        assert scan.damage is not None
        assert scan.damage.offset == HEADER_SIZE
        assert scan.damage.bytes_dropped == inflated
    else:
        assert scan.damage is None  # zeros after the records read as the end
