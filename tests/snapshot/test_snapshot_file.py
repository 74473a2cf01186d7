"""kvcluster.snapshot: the snapshot file format, its writers, its reader, and damage."""

from __future__ import annotations

import errno
import json
import os
import struct
import tracemalloc
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvcluster.errors import InvalidRequest, KVError, SnapshotError, StorageError, error_for_code
from kvcluster.journal import VersionedStore
from kvcluster.journal.fs import FileSystem
from kvcluster.snapshot import (
    MAX_HEADER_BYTES,
    PartInfo,
    PartWriter,
    Row,
    SnapshotInfo,
    assemble,
    open_snapshot,
    verify_snapshot,
    write_snapshot,
)
from kvcluster.values import pack_value

CUT = 1767225600000000
CREATED = 1767225601000000
LIMITS = {"users": {"max_keys": 0, "max_value_bytes": 0}, "orders": {"max_keys": 10, "max_value_bytes": 1 << 20}}
ROWS: list[Row] = [
    (b"users", b"u:1", pack_value({"name": "Alice"}), 1767225500000000),
    (b"users", b"u:2", pack_value(2), 1767225550000000),
]

rows_strategy = st.lists(
    st.tuples(
        st.sampled_from([b"users", b"orders", b"n" * 128]),
        st.binary(min_size=1, max_size=40),
        st.binary(min_size=1, max_size=200),
        st.integers(min_value=0, max_value=2**64 - 1),
    ),
    max_size=300,
)


def small_snapshot(tmp_path: Path) -> bytes:
    path = tmp_path / "small.kvs"
    write_snapshot(str(path), ROWS, cut=CUT, created=CREATED, namespaces={"users": LIMITS["users"]})
    return path.read_bytes()


def read_all(path: Path | str) -> list[Row]:
    with open_snapshot(str(path)) as reader:
        return list(reader)


def leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


# --- round trips -----------------------------------------------------------------


def test_round_trip_and_info(tmp_path: Path) -> None:
    path = tmp_path / "s.kvs"
    info = write_snapshot(str(path), ROWS, cut=CUT, namespace="users", namespaces=LIMITS, created=CREATED)
    assert info == SnapshotInfo(str(path), 1, CUT, CREATED, "users", LIMITS, 2, path.stat().st_size)
    with open_snapshot(str(path)) as reader:
        assert reader.info == info
        assert list(reader) == ROWS
        assert list(reader) == ROWS  # a second pass reads the file again
    assert verify_snapshot(str(path)) == info
    assert leftovers(tmp_path) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=4))
def test_parts_assembled_equal_one_write(tmp_path: Path, rows: list[Row], cuts: list[int]) -> None:
    whole = tmp_path / "whole.kvs"
    info = write_snapshot(str(whole), rows, cut=CUT, namespaces=LIMITS, created=CREATED)
    assert read_all(whole) == rows
    assert info.rows == len(rows)

    bounds = [0, *sorted(min(cut, len(rows)) for cut in cuts), len(rows)]
    parts = []
    for number, (start, end) in enumerate(pairwise(bounds)):
        part = str(tmp_path / f"part-{number}")
        with PartWriter(part) as writer:
            writer.add_many(rows[start : (start + end) // 2])
            for row in rows[(start + end) // 2 : end]:
                writer.add(*row)
        parts.append(part)
    joined = tmp_path / "joined.kvs"
    assembled = assemble(str(joined), parts, cut=CUT, namespaces=LIMITS, created=CREATED)
    assert read_all(joined) == rows
    assert verify_snapshot(str(joined)) == assembled
    assert (assembled.rows, assembled.cut, assembled.namespaces) == (info.rows, info.cut, info.namespaces)


def test_large_values_make_many_blocks(tmp_path: Path) -> None:
    rows = [(b"users", b"k%d" % i, b"\xc5" + bytes(10_000), i) for i in range(100)]  # ~1 MB
    with PartWriter(str(tmp_path / "p")) as writer:
        writer.add_many(rows)
    info = writer.close()  # closing again gives the same figures
    assert info == PartInfo(str(tmp_path / "p"), 100, info.blocks, os.path.getsize(tmp_path / "p"))
    assert 15 <= info.blocks <= 17  # about 64 KiB a block
    assemble(str(tmp_path / "s"), [info.path], cut=CUT)
    assert read_all(tmp_path / "s") == rows


def test_longest_fields_and_namespaces_interleaved(tmp_path: Path) -> None:
    rows = [
        (b"n" * 128, b"k" * 1024, b"\x01", 0),
        (b"a", b"x", b"\x02", 2**64 - 1),
        (b"n" * 128, b"y", b"\x03", 5),
        (b"a", b"z", b"\x04", 6),
    ]
    write_snapshot(str(tmp_path / "s"), rows, cut=0)
    assert read_all(tmp_path / "s") == rows


def test_empty_snapshot(tmp_path: Path) -> None:
    info = write_snapshot(str(tmp_path / "a"), [], cut=CUT)
    assert (info.rows, info.namespace, info.namespaces) == (0, None, {})
    assert read_all(tmp_path / "a") == []
    assert verify_snapshot(str(tmp_path / "a")).rows == 0
    with PartWriter(str(tmp_path / "p")) as writer:
        pass
    assert writer.close().rows == 0
    assert assemble(str(tmp_path / "b"), [str(tmp_path / "p")] * 2, cut=CUT).rows == 0
    assert assemble(str(tmp_path / "c"), [], cut=CUT).rows == 0
    assert read_all(tmp_path / "c") == []


def test_created_defaults_to_now(tmp_path: Path) -> None:
    info = write_snapshot(str(tmp_path / "s"), ROWS, cut=CUT)
    assert info.created > CUT  # written after 2026-01-01


# --- what writers refuse -----------------------------------------------------------


@pytest.mark.parametrize(
    "row",
    [
        ("users", b"k", b"\x01", 1),  # ns not bytes
        (b"", b"k", b"\x01", 1),
        (b"n" * 129, b"k", b"\x01", 1),
        (b"users", b"", b"\x01", 1),
        (b"users", b"k" * 1025, b"\x01", 1),
        (b"users", "k", b"\x01", 1),
        (b"users", b"k", b"", 1),
        (b"users", b"k", {"not": "packed"}, 1),
        (b"users", b"k", b"\x01", -1),
        (b"users", b"k", b"\x01", True),
        (b"users", b"k", b"\x01"),  # three fields
        (b"users", b"k", b"\x01", 1, 2),
    ],
)
def test_bad_rows_are_refused(tmp_path: Path, row: tuple[object, ...]) -> None:
    with pytest.raises(InvalidRequest):
        write_snapshot(str(tmp_path / "s"), [ROWS[0], row], cut=CUT)  # type: ignore[list-item]
    assert not (tmp_path / "s").exists() and leftovers(tmp_path) == []
    with pytest.raises(InvalidRequest), PartWriter(str(tmp_path / "p")) as writer:
        writer.add_many([ROWS[0], row])  # type: ignore[list-item]
        writer.close()
    assert not (tmp_path / "p").exists()  # the context manager removed the failed part


@pytest.mark.parametrize(
    "options",
    [
        {"cut": -1},
        {"cut": "now"},
        {"cut": CUT, "created": -5},
        {"cut": CUT, "namespace": "bad name"},
        {"cut": CUT, "namespaces": {"users": {"max_keys": 1}}},
        {"cut": CUT, "namespaces": {"users": {"max_keys": -1, "max_value_bytes": 0}}},
    ],
)
def test_bad_header_fields_are_refused(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        write_snapshot(str(tmp_path / "s"), ROWS, **options)  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_part_writer_lifecycle(tmp_path: Path) -> None:
    path = str(tmp_path / "p")
    writer = PartWriter(path)
    writer.add(*ROWS[0])
    writer.abandon()
    assert not os.path.exists(path)
    with pytest.raises(ValueError, match="closed"):
        writer.add(*ROWS[0])
    writer = PartWriter(path)
    info = writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.add_many(ROWS)
    assert writer.close() == info
    with pytest.raises(StorageError, match="cannot create"):
        PartWriter(str(tmp_path / "missing" / "p"))


# --- damage: every bit, every length ---------------------------------------------------


def test_every_single_bit_flip_is_detected(tmp_path: Path) -> None:
    good = small_snapshot(tmp_path)
    assert 150 < len(good) < 400
    path = tmp_path / "damaged.kvs"
    for index in range(len(good)):
        for bit in range(8):
            damaged = bytearray(good)
            damaged[index] ^= 1 << bit
            path.write_bytes(damaged)
            with pytest.raises(SnapshotError) as caught:
                verify_snapshot(str(path))
            assert str(path) in str(caught.value)
            yielded: list[Row] = []
            with pytest.raises(SnapshotError), open_snapshot(str(path)) as reader:
                yielded.extend(reader)
            assert yielded == ROWS[: len(yielded)], (index, bit)


def test_every_truncation_is_detected(tmp_path: Path) -> None:
    good = small_snapshot(tmp_path)
    path = tmp_path / "short.kvs"
    for length in range(len(good)):
        path.write_bytes(good[:length])
        with pytest.raises(SnapshotError):
            verify_snapshot(str(path))
    path.write_bytes(good + b"\x00")  # and a byte too many
    with pytest.raises(SnapshotError, match="does not end with a footer"):
        open_snapshot(str(path))


def test_truncated_and_damaged_parts_are_refused_by_assemble(tmp_path: Path) -> None:
    with PartWriter(str(tmp_path / "p")) as writer:
        writer.add_many(ROWS)
    good = (tmp_path / "p").read_bytes()
    for length in range(len(good)):
        (tmp_path / "p").write_bytes(good[:length])
        with pytest.raises(SnapshotError, match=str(tmp_path / "p")):
            assemble(str(tmp_path / "s"), [str(tmp_path / "p")], cut=CUT)
    damaged = bytearray(good)
    damaged[30] ^= 4
    (tmp_path / "p").write_bytes(damaged)
    with pytest.raises(SnapshotError, match="block checksum mismatch at byte 12"):
        assemble(str(tmp_path / "s"), [str(tmp_path / "p")], cut=CUT)
    assert sorted(os.listdir(tmp_path)) == ["p"]


# --- foreign files ---------------------------------------------------------------------


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    cases = {
        "empty": (b"", "not a kvcluster snapshot: the file is empty"),
        "random": (bytes(range(7, 250)) * 3, r"not a kvcluster snapshot \(it starts with"),
        "json": (json.dumps({"cut": CUT, "rows": []}).encode(), r"not a kvcluster snapshot \(it starts with b'\{"),
        "short": (b"KVCS", "truncated: the file is 4 bytes"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SnapshotError, match=message):
            open_snapshot(str(tmp_path / name))

    with VersionedStore.open(str(tmp_path / "store"), durability="none") as store:
        store.set("ns", "key", "value")
    with pytest.raises(SnapshotError, match=r"not a kvcluster snapshot \(a kvcluster journal\)"):
        verify_snapshot(str(tmp_path / "store" / "journal"))

    with PartWriter(str(tmp_path / "part")):
        pass
    with pytest.raises(SnapshotError, match=r"\(a kvcluster snapshot part\)"):
        open_snapshot(str(tmp_path / "part"))
    write_snapshot(str(tmp_path / "whole"), ROWS, cut=CUT)
    with pytest.raises(SnapshotError, match=r"not a kvcluster snapshot part \(a kvcluster snapshot\)"):
        assemble(str(tmp_path / "again"), [str(tmp_path / "whole")], cut=CUT)
    with pytest.raises(SnapshotError, match="cannot read"):
        open_snapshot(str(tmp_path / "missing"))


def test_a_newer_version_is_refused(tmp_path: Path) -> None:
    data = bytearray(small_snapshot(tmp_path))
    struct.pack_into("<H", data, 8, 2)
    (tmp_path / "future.kvs").write_bytes(data)
    with pytest.raises(SnapshotError, match="format version 2 is newer than this kvcluster") as caught:
        open_snapshot(str(tmp_path / "future.kvs"))
    assert (caught.value.path, caught.value.offset) == (str(tmp_path / "future.kvs"), 8)


def test_hostile_lengths_fail_fast_without_allocating(tmp_path: Path) -> None:
    good = small_snapshot(tmp_path)
    header = bytearray(good)
    struct.pack_into("<I", header, 12, 2**31)
    block = bytearray(good)
    header_len = struct.unpack_from("<I", good, 12)[0]
    struct.pack_into("<I", block, 20 + header_len + 4, 2**31 - 1)
    near = bytearray(good)
    struct.pack_into("<I", near, 12, MAX_HEADER_BYTES)
    cases = [
        (header, "header length 2147483648 exceeds the limit"),
        (near, "runs past the footer"),
        (block, f"bad block length 2147483647 .* at byte {20 + header_len}"),
    ]
    for data, message in cases:
        (tmp_path / "hostile").write_bytes(data)
        tracemalloc.start()
        try:
            with pytest.raises(SnapshotError, match=message):
                verify_snapshot(str(tmp_path / "hostile"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20


def test_rows_outside_the_scope_are_damage(tmp_path: Path) -> None:
    rows = [*ROWS, (b"orders", b"o:1", b"\x01", 1)]
    write_snapshot(str(tmp_path / "s"), rows, cut=CUT, namespace="users")
    with pytest.raises(SnapshotError, match="a row of namespace b'orders' in a snapshot of 'users'"):
        verify_snapshot(str(tmp_path / "s"))


# --- failures while writing ----------------------------------------------------------


class FailingFS(FileSystem):
    def __init__(self, fail: str, after: int = 0) -> None:
        self.fail = fail
        self.after = after

    def write_all(self, fd: int, data: bytes) -> None:
        if self.fail == "write":
            if self.after <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.after -= 1
        super().write_all(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fail == "fsync":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fsync(fd)

    def rename(self, src: str, dst: str) -> None:
        if self.fail == "rename":
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        super().rename(src, dst)


@pytest.mark.parametrize(("fail", "after"), [("write", 0), ("write", 1), ("fsync", 0), ("rename", 0)])
def test_a_failing_write_leaves_the_old_snapshot(tmp_path: Path, fail: str, after: int) -> None:
    out = tmp_path / "s.kvs"
    out.write_bytes(b"the old snapshot")
    rows = [(b"users", b"k%d" % i, b"\xc5" + bytes(100_000), i) for i in range(30)]  # a few MB: many writes
    with PartWriter(str(tmp_path / "p")) as writer:
        writer.add_many(rows)
    for assembled in (False, True):
        with pytest.raises(StorageError, match=str(out)):
            if assembled:
                assemble(str(out), [str(tmp_path / "p")], cut=CUT, fs=FailingFS(fail, after))
            else:
                write_snapshot(str(out), rows, cut=CUT, fs=FailingFS(fail, after))
        assert out.read_bytes() == b"the old snapshot"
        assert sorted(os.listdir(tmp_path)) == ["p", "s.kvs"]


def test_a_failing_part_write_removes_the_part(tmp_path: Path) -> None:
    writer = PartWriter(str(tmp_path / "p"), fs=FailingFS("write"))
    writer.add_many(ROWS)
    with pytest.raises(StorageError, match="No space left"):
        writer.close()
    assert os.listdir(tmp_path) == []


def test_snapshot_error_is_a_kv_error() -> None:
    assert issubclass(SnapshotError, KVError)
    assert SnapshotError.code == "snapshot_error"
    assert type(error_for_code("snapshot_error", "x")) is SnapshotError


def test_temp_files_of_killed_writers_are_cleared_by_the_next_write(tmp_path: Path) -> None:
    """Regression: a writer killed between creating its temp file and the rename left
    `NAME.PID.HEX.tmp` beside the target for good (found by the named kill points)."""
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    path = tmp_path / "s.kvs"
    stale = tmp_path / f"s.kvs.{int(dead.stdout)}.0badc0de.tmp"
    running = tmp_path / f"s.kvs.{os.getpid()}.00c0ffee.tmp"  # a live writer's: kept
    unrelated = tmp_path / f"other.kvs.{int(dead.stdout)}.0badc0de.tmp"  # another target's: kept
    for temp in (stale, running, unrelated):
        temp.write_bytes(b"partial")
    write_snapshot(str(path), ROWS, cut=CUT, created=CREATED, namespaces={"users": LIMITS["users"]})
    assert leftovers(tmp_path) == sorted([running.name, unrelated.name])
    assert read_all(path) == ROWS
