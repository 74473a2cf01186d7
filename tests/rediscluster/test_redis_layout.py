"""The Redis Cluster layout: key names, record bytes, the slot function, and the worked
examples of docs/redis-cluster.md, checked byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcluster import Scope, StorageError
from kvcluster.rediscluster.layout import (
    REGISTRY_KEY,
    Limits,
    Lock,
    TxnRecord,
    counter_key,
    decode_limits,
    decode_record,
    decode_stored,
    decode_txn,
    encode_limits,
    encode_lock,
    encode_record,
    encode_txn,
    namespace_of,
    namespace_pattern,
    record_tail,
    txn_key,
    user_key,
    value_key,
)
from kvcluster.rediscluster.slots import SLOTS, key_slot, slot_tag
from kvcluster.values import pack_value

DOC = Path(__file__).resolve().parents[2] / "docs" / "redis-cluster.md"


def test_keys() -> None:
    assert value_key(b"users", b"u:1") == b"kv|users|u:1"
    assert namespace_pattern(b"users") == b"kv|users|*"
    assert user_key(b"users", b"kv|users|a|b") == "a|b"
    assert namespace_of(b"kv|users|a|b") == "users"
    assert namespace_of(REGISTRY_KEY) is None and namespace_of(counter_key(b"users")) is None
    assert namespace_of(b"other") is None and namespace_of(b"kv|nokey") is None
    assert key_slot(REGISTRY_KEY) == key_slot(counter_key(b"users")) == key_slot(b"meta")


def test_a_record_is_timestamp_scope_and_msgpack() -> None:
    record = encode_record(1_700_000_000_000_000, Scope.EPHEMERAL, pack_value([1, "a"]))
    assert record == bytes.fromhex("00060a24181e4000") + b"\x02" + pack_value([1, "a"])
    assert decode_record(record) == (1_700_000_000_000_000, Scope.EPHEMERAL, pack_value([1, "a"]))
    assert record_tail(Scope.PERMANENT, b"\xc0") == b"\x01\xc0"


@pytest.mark.parametrize("data", [b"", b"\x00" * 9, b"\x00" * 8 + b"\x07\xc0", "text", None], ids=repr)
def test_bytes_that_are_not_a_record_are_a_storage_error(data: object) -> None:
    with pytest.raises(StorageError, match="kvcluster record"):
        decode_record(data, b"kv|ns|k")


@given(st.integers(0, 2**63 - 1), st.sampled_from(list(Scope)), st.binary(min_size=1))
def test_records_round_trip(ts: int, scope: Scope, packed: bytes) -> None:
    assert decode_record(encode_record(ts, scope, packed)) == (ts, scope, packed)


def test_limits_round_trip_and_damage_is_reported() -> None:
    assert decode_limits(encode_limits(Limits(5, 100)), "users") == Limits(5, 100)
    with pytest.raises(StorageError, match="damaged"):
        decode_limits(b"\x90", "users")


def test_the_slot_function_is_redis_clusters() -> None:
    redis_key_slot = pytest.importorskip("redis.crc").key_slot

    @given(st.binary(max_size=40))
    def same_slot(key: bytes) -> None:
        assert key_slot(key) == redis_key_slot(key)

    same_slot()


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        (b"foo", 12182),
        (b"{user1000}.following", 3443),
        (b"{user1000}.followers", 3443),
        (b"foo{}{bar}", 8363),
        (b"foo{{bar}}zap", 4015),
    ],
)
def test_slot_vectors_of_the_cluster_spec(key: bytes, slot: int) -> None:
    assert key_slot(key) == slot


def test_the_worked_examples_of_the_docs_are_exact() -> None:
    """Each `key -> hex` line of docs/redis-cluster.md is what the layout makes."""
    text = DOC.read_text()
    examples = re.findall(r"^set (\S+) (\S+) (\S+) scope=(\w+) ts=(\d+)\n.*\n\s+record ([0-9a-f ]+)$", text, re.M)
    assert len(examples) >= 3
    for ns, key, value, scope, ts, record in examples:
        packed = pack_value(eval(value))  # the docs write each value as a Python literal
        expected = encode_record(int(ts), Scope[scope], packed)
        assert bytes.fromhex(record) == expected, (ns, key)
    slots = re.findall(r"^\s+key (\S+) +slot (\d+)$", text, re.M)
    assert len(slots) >= 3
    for stored, slot in slots:
        assert key_slot(stored.encode()) == int(slot), stored


# -- cross-slot batches: slot tags, locks, txn records -----------------------------------


@pytest.mark.parametrize("slot", [0, 1, 3300, 8000, 16006, SLOTS - 1])
def test_a_slot_tag_puts_a_key_in_its_slot(slot: int) -> None:
    tag = slot_tag(slot)
    assert key_slot(b"{" + tag + b"}") == slot and key_slot(txn_key(tag, b"0123")) == slot
    assert tag.isdigit() and len(tag) <= 6
    assert all(key_slot(str(n).encode()) != slot for n in range(int(tag)))  # the first such
    assert slot_tag(slot) is tag  # cached


def test_every_slot_has_a_tag_of_at_most_six_digits() -> None:
    found = {key_slot(str(n).encode()) for n in range(1_000_000)}
    assert len(found) == SLOTS
    with pytest.raises(ValueError, match="slot"):
        slot_tag(SLOTS)


def test_txn_records_are_not_value_keys() -> None:
    assert namespace_of(txn_key(b"3411", b"0123456789abcdef")) is None
    assert txn_key(b"3411", b"0123456789abcdef") == b"kv|{3411}|txn|0123456789abcdef"


@given(
    st.integers(0, 2**63 - 1),
    st.none() | st.binary(min_size=10, max_size=70000),
    st.none() | st.binary(min_size=2, max_size=300),
)
def test_locks_round_trip(ts: int, old: bytes | None, new: bytes | None) -> None:
    data = encode_lock(ts, old, new, b"0123456789abcdef", b"kv|{0}|txn|0123456789abcdef")
    assert data[8] == 0xFF and len(data) >= 10
    assert decode_stored(data) == Lock(old, new, b"0123456789abcdef", b"kv|{0}|txn|0123456789abcdef")
    with pytest.raises(StorageError, match="holds a lock"):
        decode_record(data, b"kv|ns|k")


@pytest.mark.parametrize("tail", [b"", b"\x94\xc0", b"\x93\xc0\xc0\xc0", b"\x94\x01\xc0\xc4\x01a\xc4\x01b"])
def test_a_damaged_lock_is_a_storage_error(tail: bytes) -> None:
    with pytest.raises(StorageError, match=r"lock|record"):
        decode_stored(b"\x00" * 8 + b"\xff" + tail, b"kv|ns|k")


def test_txn_records_round_trip_and_damage_is_reported() -> None:
    record = TxnRecord("committed", 1_700_000_024_000_000, 1_700_000_004_001_000, [b"kv|u|b"], [b"kv|u|a"])
    assert decode_txn(encode_txn(record)) == record
    for damaged in (b"\x90", encode_txn(record._replace(state="maybe")), b"\x81\xa5state\xa7pending"):
        with pytest.raises(StorageError, match="txn record"):
            decode_txn(damaged, b"kv|{0}|txn|x")


def test_the_worked_lock_example_of_the_docs_is_exact() -> None:
    """The lock of docs/redis-cluster.md section 6.2, byte for byte."""
    text = DOC.read_text()
    (example,) = re.findall(
        r"^lock (\S+) (\S+) old_ts=(\d+) old=(\S+) new=(\S+) scope=(\w+) txn=(\w+)\n"
        r"\s+txn key (\S+) +slot (\d+)\n\s+lock ((?:[0-9a-f ]+\n)+)",
        text,
        re.M,
    )
    ns, key, old_ts, old, new, scope, txn, stored_txn, slot, lock = example
    assert key_slot(value_key(ns.encode(), key.encode())) == int(slot) == key_slot(stored_txn.encode())
    assert stored_txn.encode() == txn_key(slot_tag(int(slot)), txn.encode())
    old_record = encode_record(int(old_ts), Scope.PERMANENT, pack_value(eval(old)))
    new_tail = record_tail(Scope[scope], pack_value(eval(new)))
    assert bytes.fromhex(lock) == encode_lock(int(old_ts), old_record, new_tail, txn.encode(), stored_txn.encode())
