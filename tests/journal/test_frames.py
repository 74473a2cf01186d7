"""The LevelDB-style frame suite: round trips, boundaries, and every way a frame breaks."""

from __future__ import annotations

import os
import random
import struct
import zlib

import pytest

from kvcluster.journal import VersionedStore
from kvcluster.journal.format import (
    HEADER_SIZE,
    RECORD_HEAD,
    TYPE_DELETE,
    TYPE_PUT,
    encode_delete,
    encode_header,
    encode_put,
    record_size,
)
from kvcluster.journal.reader import RecordScan
from kvcluster.values import pack_value

PAGE = 4096
TS0 = 1_700_000_000_000_000


def image(records: list[bytes], tail: int = 1024) -> bytes:
    return encode_header(0) + b"".join(records) + bytes(tail)


def scan_all(data: bytes) -> tuple[list[tuple[int, bytes, bytes, int, bytes]], RecordScan]:
    scan = RecordScan(data, "test")
    return list(scan), scan


def put(i: int, value_len: int = 8) -> bytes:
    return encode_put(b"ns", b"key%d" % i, TS0 + i, 1, pack_value(b"v" * value_len))


def test_round_trip_of_100k_records_of_varied_sizes() -> None:
    rng = random.Random(7)
    expected = []
    records = []
    for i in range(100_000):
        ns = b"ns%d" % (i % 7)
        key = b"k" * rng.randint(1, 40) + str(i).encode()
        if i % 10 == 9:
            records.append(encode_delete(ns, key, TS0 + i, 1))
            expected.append((TYPE_DELETE, ns, key, TS0 + i, b""))
        else:
            value = pack_value(os.urandom(rng.choice([0, 1, 10, 300, 5000])))
            records.append(encode_put(ns, key, TS0 + i, 1, value))
            expected.append((TYPE_PUT, ns, key, TS0 + i, value))
    got, scan = scan_all(image(records))
    assert got == expected
    assert scan.damage is None
    assert scan.position == HEADER_SIZE + sum(map(len, records))


def test_largest_fields_round_trip() -> None:
    ns, key, value = b"n" * 128, b"k" * 1024, pack_value(b"x" * (1 << 20))
    got, scan = scan_all(image([encode_put(ns, key, TS0, 1, value)]))
    assert got == [(TYPE_PUT, ns, key, TS0, value)]
    assert scan.damage is None


@pytest.mark.parametrize("shift", [-1, 0, 1])
def test_records_ending_at_around_a_page_boundary(shift: int) -> None:
    first = put(0)
    # size the second record so it ends exactly at the page boundary (+/- one byte)
    fill = PAGE - HEADER_SIZE - len(first) - record_size(b"ns", b"key1", pack_value(b"")) + shift
    second = encode_put(b"ns", b"key1", TS0 + 1, 1, pack_value(b"v" * (fill - 2)))
    third = put(2)
    got, scan = scan_all(image([first, second, third]))
    assert [r[2] for r in got] == [b"key0", b"key1", b"key2"]
    assert scan.damage is None


def test_records_filling_the_file_to_its_last_byte() -> None:
    data = encode_header(0) + put(0) + put(1)  # no zero tail at all
    got, scan = scan_all(data)
    assert len(got) == 2
    assert scan.damage is None
    assert scan.position == len(data)


@pytest.mark.parametrize("cut", [1, 5, 8, 12, 21, 30])
def test_torn_tail_returns_the_valid_prefix(cut: int) -> None:
    records = [put(i) for i in range(5)]
    data = encode_header(0) + b"".join(records)
    data = data[: len(data) - cut]
    got, scan = scan_all(data)
    assert len(got) == 4
    assert scan.damage is not None and scan.damage.torn
    assert scan.damage.offset == HEADER_SIZE + sum(map(len, records[:4]))


@pytest.mark.parametrize("zeroed", [1, 4, 9, 25])
def test_zero_filled_tail_of_the_last_record(zeroed: int) -> None:
    records = [put(i) for i in range(5)]
    raw = bytearray(image(records))
    end = HEADER_SIZE + sum(map(len, records))
    raw[end - zeroed : end] = bytes(zeroed)
    got, scan = scan_all(bytes(raw))
    assert len(got) == 4
    assert scan.damage is not None and scan.damage.torn


@pytest.mark.parametrize("length", [0xFFFFFFFF, 1 << 30, 14, 3])
def test_bad_length_is_not_trusted(length: int) -> None:
    records = [put(i) for i in range(3)]
    raw = bytearray(image(records))
    offset = HEADER_SIZE + len(records[0])
    struct.pack_into("<I", raw, offset + 4, length)
    got, scan = scan_all(bytes(raw))
    assert len(got) == 1
    assert scan.damage is not None
    assert scan.damage.offset == offset
    assert not scan.damage.torn  # a valid record follows


def test_crc_flip_stops_at_the_record_and_never_returns_it() -> None:
    records = [put(i) for i in range(3)]
    raw = bytearray(image(records))
    offset = HEADER_SIZE + len(records[0])
    raw[offset] ^= 0x01
    got, scan = scan_all(bytes(raw))
    assert [r[2] for r in got] == [b"key0"]
    assert scan.damage is not None
    assert scan.damage.reason == "checksum mismatch"


def _reframed(body: bytes) -> bytes:
    """A frame around `body` with a correct CRC: damage only a bad writer could make."""
    return struct.pack("<I", zlib.crc32(body)) + body


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:4] + bytes([7]) + b[5:], "unknown record type 7"),
        (lambda b: b[:5] + bytes([2]) + b[6:], "scope 2 is never journaled"),
        (lambda b: b[:6] + bytes([0]) + b[7:], "field lengths do not fit the record"),
        (lambda b: b[:4] + bytes([TYPE_DELETE]) + b[5:], "field lengths do not fit the record"),
    ],
)
def test_well_framed_but_invalid_records_are_damage(mutate: object, reason: str) -> None:
    good = put(1)
    bad = _reframed(mutate(good[4:]))  # type: ignore[operator]
    got, scan = scan_all(image([put(0), bad, put(2)]))
    assert len(got) == 1
    assert scan.damage is not None
    assert scan.damage.reason == reason


def test_wiped_middle_page_is_reported_as_corruption_with_offset() -> None:
    records = [put(i, value_len=100) for i in range(200)]
    raw = bytearray(image(records))
    raw[2 * PAGE : 3 * PAGE] = bytes(PAGE)
    got, scan = scan_all(bytes(raw))
    ends = []
    pos = HEADER_SIZE
    for record in records:
        pos += len(record)
        ends.append(pos)
    assert len(got) == sum(1 for end in ends if end <= 2 * PAGE)
    damage = scan.damage
    assert damage is not None
    assert not damage.torn
    assert damage.offset == max(end for end in [HEADER_SIZE, *ends] if end <= 2 * PAGE)
    assert damage.bytes_dropped == ends[-1] - damage.offset
    assert "test" in str(damage)


def test_zero_gap_exactly_at_a_record_boundary_followed_by_data() -> None:
    records = [put(i) for i in range(4)]
    raw = bytearray(image(records))
    start = HEADER_SIZE + len(records[0])
    raw[start : start + len(records[1])] = bytes(len(records[1]))
    got, scan = scan_all(bytes(raw))
    assert len(got) == 1
    assert scan.damage is not None
    assert scan.damage.reason.startswith("zero-filled gap followed by data at byte")
    assert not scan.damage.torn


def test_garbage_after_the_last_record_is_not_read_as_data() -> None:
    records = [put(i) for i in range(3)]
    raw = bytearray(image(records, tail=4096))
    end = HEADER_SIZE + sum(map(len, records))
    raw[end + 100 : end + 110] = b"\xde\xad\xbe\xef" * 2 + b"ab"
    got, scan = scan_all(bytes(raw))
    assert len(got) == 3
    assert scan.damage is not None
    assert scan.damage.offset == end
    assert not scan.damage.torn


def test_reopen_after_a_wiped_middle_page_cuts_quarantines_and_accepts_new_writes(store_dir: str) -> None:
    with VersionedStore.open(store_dir, buffer_size=1 << 16) as store:
        stamps = [store.set("ns", f"key{i}", "v" * 100) for i in range(200)]
        end = store.stats()["journal_bytes"]
    journal = os.path.join(store_dir, "journal")
    with open(journal, "r+b") as f:
        f.seek(2 * PAGE)
        f.write(bytes(PAGE))

    with VersionedStore.open(store_dir, buffer_size=1 << 16) as store:
        assert len(store.damage) == 1
        damage = store.damage[0]
        assert not damage.torn
        kept = store.count()
        assert 0 < kept < 200
        for i in range(kept):
            assert store.get("ns", f"key{i}") == ("v" * 100, stamps[i])
        assert store.get("ns", f"key{kept}") is None
        (quarantined,) = store.quarantined
        with open(quarantined, "rb") as f:
            saved = f.read()
        assert len(saved) == end - damage.offset
        ts = store.set("ns", "after", "new")

    with VersionedStore.open(store_dir, buffer_size=1 << 16) as store:
        assert store.damage == ()
        assert store.get("ns", "after") == ("new", ts)
        assert store.count() == kept + 1  # nothing from behind the damage came back


def test_reopen_after_a_torn_tail_cuts_it_without_quarantine(store_dir: str) -> None:
    with VersionedStore.open(store_dir) as store:
        for i in range(10):
            store.set("ns", f"k{i}", i)
        end = store.stats()["journal_bytes"]
    journal = os.path.join(store_dir, "journal")
    with open(journal, "r+b") as f:
        f.seek(end - 3)
        f.write(bytes(3))
    with VersionedStore.open(store_dir) as store:
        assert [d.torn for d in store.damage] == [True]
        assert store.quarantined == ()
        assert store.count() == 9
    assert not [n for n in os.listdir(store_dir) if "damaged" in n]


def test_record_head_layout_is_stable() -> None:
    assert RECORD_HEAD.size == 21
    assert HEADER_SIZE == 32
