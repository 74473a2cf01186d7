"""Byte surgery on a closed store: every flipped bit and every truncation point.

A store reopened after damage must hold exactly the writes of the records before
the damaged one — never a changed value, never a write from behind the damage.
"""

from __future__ import annotations

import os
import shutil

import pytest
from kvtest import LONG

from kvcluster import StorageError
from kvcluster.journal import VersionedStore
from kvcluster.journal.format import HEADER_SIZE

pytestmark = [pytest.mark.crash, pytest.mark.slow]

BUFFER = 4096
LONG_BUFFER = 256 << 10  # room for 64 KiB of records below the high-water mark


def build(directory: str, count: int, buffer: int = BUFFER) -> tuple[list[tuple[str, object, int]], list[int]]:
    """Write `count` records; return (key, value, ts) per record and each record's end offset."""
    writes: list[tuple[str, object, int]] = []
    ends: list[int] = []
    with VersionedStore.open(directory, buffer_size=buffer) as store:
        for i in range(count):
            key, value = f"key-{i % 4}", {"n": i, "s": "v" * (i % 40 * 3)}
            writes.append((key, value, store.set("ns", key, value)))
            ends.append(store.stats()["journal_bytes"])
        assert store.rotations == 0  # the journal holds every record, in order
    return writes, ends


def expected_after(writes: list[tuple[str, object, int]], kept: int) -> dict[str, tuple[object, int]]:
    state: dict[str, tuple[object, int]] = {}
    for key, value, ts in writes[:kept]:
        state[key] = (value, ts)
    return state


def reopen_state(directory: str, buffer: int = BUFFER) -> dict[str, tuple[object, int]]:
    with VersionedStore.open(directory, buffer_size=buffer) as store:
        return dict(store.items("ns"))


def restore(pristine: bytes, path: str, directory: str) -> None:
    with open(path, "wb") as f:
        f.write(pristine)
    for name in os.listdir(directory):
        if name.startswith("journal.damaged."):
            os.unlink(os.path.join(directory, name))


def test_bit_flip_sweep(store_dir: str) -> None:
    """CI: every bit of every byte of a few records. Long: one bit of every byte of 64 KiB."""
    buffer = LONG_BUFFER if LONG else BUFFER
    writes, ends = build(store_dir, 700 if LONG else 6, buffer)
    path = os.path.join(store_dir, "journal")
    with open(path, "rb") as f:
        pristine = f.read()
    sweep_end = 64 * 1024 if LONG else ends[-1] + 64  # the records and some zeros after them
    assert ends[-1] > sweep_end or not LONG
    flips = 0
    for offset in range(HEADER_SIZE, sweep_end):
        kept = sum(1 for end in ends if end <= offset)  # records wholly before the damage
        for bit in [offset % 8] if LONG else range(8):
            damaged = bytearray(pristine)
            damaged[offset] ^= 1 << bit
            restore(bytes(damaged), path, store_dir)
            assert reopen_state(store_dir, buffer) == expected_after(writes, kept), (offset, bit)
            flips += 1
    assert flips == (1 if LONG else 8) * (sweep_end - HEADER_SIZE)


def test_any_header_flip_is_refused_without_touching_the_file(store_dir: str) -> None:
    build(store_dir, 2)
    path = os.path.join(store_dir, "journal")
    with open(path, "rb") as f:
        pristine = f.read()
    for offset in range(HEADER_SIZE):
        for bit in (0, 5):
            damaged = bytearray(pristine)
            damaged[offset] ^= 1 << bit
            restore(bytes(damaged), path, store_dir)
            with pytest.raises(StorageError):
                VersionedStore.open(store_dir, buffer_size=BUFFER)
            with open(path, "rb") as f:
                assert f.read() == bytes(damaged)


def test_truncation_at_every_byte_of_the_last_records(store_dir: str, tmp_path: object) -> None:
    writes, ends = build(store_dir, 8)
    path = os.path.join(store_dir, "journal")
    with open(path, "rb") as f:
        pristine = f.read()
    start = ends[-4]  # the last three records, byte by byte
    for cut in range(start, ends[-1] + 1):
        restore(pristine[:cut], path, store_dir)
        kept = sum(1 for end in ends if end <= cut)
        assert reopen_state(store_dir) == expected_after(writes, kept), cut
        assert os.path.getsize(path) >= BUFFER  # extended again, with zeros


def test_damage_then_writes_then_reopen_keeps_the_new_writes(store_dir: str) -> None:
    """The reference system appended behind damage and lost those writes on reopen."""
    writes, ends = build(store_dir, 6)
    path = os.path.join(store_dir, "journal")
    with open(path, "r+b") as f:
        f.seek(ends[2] + 5)
        f.write(b"\xff")
    with VersionedStore.open(store_dir, buffer_size=BUFFER) as store:
        assert store.damage
        new = {f"new{i}": store.set("ns", f"new{i}", i) for i in range(20)}
    state = reopen_state(store_dir)
    for key, ts in new.items():
        assert state[key] == (int(key[3:]), ts)
    assert {k: v for k, v in state.items() if not k.startswith("new")} == expected_after(writes, 3)
    shutil.rmtree(store_dir)
