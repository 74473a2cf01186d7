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
    counter_key,
    decode_limits,
    decode_record,
    encode_limits,
    encode_record,
    namespace_of,
    namespace_pattern,
    record_tail,
    user_key,
    value_key,
)
from kvcluster.rediscluster.slots import key_slot
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
