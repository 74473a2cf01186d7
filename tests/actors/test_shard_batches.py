"""A shard's side of batches and two-phase commit, on `ShardState` over a real journal:
validation, locks, conflicts, commit and abort, recovery of prepared transactions,
and the bound on reply size."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvcluster.actors.shard_state import ShardState
from kvcluster.codec import Op, Reply, decode_reply, decode_request, encode_request
from kvcluster.errors import ClusterUnavailable, InvalidRequest
from kvcluster.journal import VersionedStore
from kvcluster.scope import Scope
from kvcluster.values import pack_value, unpack_value

NS = b"ns"
PERMANENT = int(Scope.PERMANENT)


def open_state(path: Path) -> ShardState:
    store = VersionedStore.open(str(path))
    state = ShardState(0, store, 1, lambda ns, wanted: None)
    state.sync_namespaces({"ns": [0, 0]})
    return state


@pytest.fixture
def state(tmp_path: Path) -> Iterator[ShardState]:
    shard = open_state(tmp_path / "shard")
    yield shard
    shard.store.close()


def ask(state: ShardState, op: Op, *args: Any) -> Any:
    """Send one request through the codec, as the shard loop would; the result, or raise."""
    request = decode_request(encode_request(1, 1, op, *args))
    reply: Reply = decode_reply(state.handle(request))
    return reply.unwrap()


def pairs(**values: Any) -> list[list[Any]]:
    return [[key.encode(), pack_value(value)] for key, value in values.items()]


def future_deadline(seconds: float = 5.0) -> int:
    return time.time_ns() // 1000 + int(seconds * 1_000_000)


def value_of(state: ShardState, key: str) -> Any:
    found = state.store.get_raw(NS, key.encode())
    return None if found is None else unpack_value(found[0])


def test_mset_applies_valid_items_at_one_timestamp(state: ShardState) -> None:
    answer = ask(state, Op.MSET, NS, pairs(a=1, b=2), PERMANENT)
    assert answer["errors"] == {}
    assert state.store.get_raw(NS, b"a")[1] == state.store.get_raw(NS, b"b")[1] == answer["ts"]  # type: ignore[index]


def test_mget_answers_with_a_cut_newer_than_every_value(state: ShardState) -> None:
    ts = ask(state, Op.MSET, NS, pairs(a=1), PERMANENT)["ts"]
    cut, rows = ask(state, Op.MGET, NS, [b"a", b"nope"])
    assert rows == [[pack_value(1), ts], None]
    assert cut > ts
    assert ask(state, Op.MSET, NS, pairs(a=2), PERMANENT)["ts"] > cut


def test_mget_stops_where_a_reply_would_be_too_large(state: ShardState) -> None:
    ask(state, Op.MSET, NS, pairs(a="x" * 600, b="y" * 600, c="z" * 600), PERMANENT)
    state.reply_budget = 1000
    _cut, rows = ask(state, Op.MGET, NS, [b"a", b"b", b"c"])
    assert len(rows) == 1  # the client asks again for the rest
    state.reply_budget = 10
    _cut, rows = ask(state, Op.MGET, NS, [b"c"])
    assert len(rows) == 1  # one row always goes, however large


def test_consuming_more_than_a_reply_carries_is_refused(state: ShardState) -> None:
    ask(state, Op.MSET, NS, pairs(a="x" * 600, b="y" * 600), PERMANENT)
    state.reply_budget = 1000
    with pytest.raises(InvalidRequest, match="more than one reply"):
        ask(state, Op.MCONSUME, NS, [b"a", b"b"])
    with pytest.raises(InvalidRequest, match="more than one reply"):
        ask(state, Op.ATOMIC, NS, "consume", [b"a", b"b"], PERMANENT)
    assert value_of(state, "a") == "x" * 600


@pytest.mark.parametrize(
    "args",
    [
        [NS, [b"a", b"a"]],
        [NS, []],
        [NS, [b""]],
        [NS, [b"x" * 2000]],
        [NS, ["text"]],
        [NS, "nope"],
        [NS],
    ],
)
def test_malformed_key_lists_are_refused(state: ShardState, args: list[Any]) -> None:
    with pytest.raises(InvalidRequest):
        ask(state, Op.MDELETE, *args)


@pytest.mark.parametrize(
    "args",
    [
        [NS, "drop", [b"a"], PERMANENT],
        [NS, "set", [[b"a"]], PERMANENT],
        [NS, "set", [[b"a", 1, 2]], PERMANENT],
        [NS, "set", pairs(a=1), 7],
        [NS, "delete", [b"a"]],
    ],
)
def test_malformed_atomic_batches_are_refused(state: ShardState, args: list[Any]) -> None:
    with pytest.raises(InvalidRequest):
        ask(state, Op.ATOMIC, *args)


def test_atomic_refuses_everything_when_one_key_fails(state: ShardState) -> None:
    ask(state, Op.MSET, NS, pairs(a=1), PERMANENT)
    answer = ask(state, Op.ATOMIC, NS, "delete", [b"a", b"missing"], PERMANENT)
    assert answer["ok"] is False and list(answer["errors"]) == [b"missing"]
    assert value_of(state, "a") == 1


def test_prepare_locks_keys_until_commit_and_commit_applies_at_the_given_timestamp(state: ShardState) -> None:
    ask(state, Op.MSET, NS, pairs(a=1), PERMANENT)
    vote = ask(state, Op.TXN_PREPARE, NS, b"t1", future_deadline(), "set", pairs(a=2, b=3), PERMANENT)
    assert vote["ok"] is True
    assert value_of(state, "a") == 1 and value_of(state, "b") is None  # prepared, not applied
    assert state.locks == {NS: {b"a": b"t1", b"b": b"t1"}}
    conflict = ask(state, Op.ATOMIC, NS, "set", pairs(b=9), PERMANENT)
    assert conflict["ok"] is False and conflict["errors"][b"b"][0] == ClusterUnavailable.code
    other = ask(state, Op.TXN_PREPARE, NS, b"t2", future_deadline(), "delete", [b"a"], PERMANENT)
    assert other["ok"] is False and "conflict" in other["errors"][b"a"][1]
    commit_ts = vote["ts"] + 1000
    ask(state, Op.TXN_COMMIT, b"t1", commit_ts)
    assert state.store.get_raw(NS, b"a") == (pack_value(2), commit_ts)
    assert state.store.get_raw(NS, b"b") == (pack_value(3), commit_ts)
    assert state.locks == {} and state.transactions == {}
    ask(state, Op.TXN_COMMIT, b"t1", commit_ts)  # repeated: nothing happens
    assert ask(state, Op.MSET, NS, pairs(c=1), PERMANENT)["ts"] > commit_ts  # the clock moved past it


def test_abort_drops_a_prepared_transaction(state: ShardState) -> None:
    ask(state, Op.TXN_PREPARE, NS, b"t1", future_deadline(), "set", pairs(a=2), PERMANENT)
    ask(state, Op.TXN_ABORT, b"t1")
    assert value_of(state, "a") is None and state.locks == {}
    ask(state, Op.TXN_ABORT, b"t1")  # repeated: nothing happens


def test_a_prepare_past_its_deadline_is_refused(state: ShardState) -> None:
    with pytest.raises(ClusterUnavailable, match="deadline"):
        ask(state, Op.TXN_PREPARE, NS, b"t1", future_deadline(-1), "set", pairs(a=2), PERMANENT)
    assert state.locks == {}


def test_the_same_transaction_cannot_prepare_twice(state: ShardState) -> None:
    ask(state, Op.TXN_PREPARE, NS, b"t1", future_deadline(), "set", pairs(a=2), PERMANENT)
    with pytest.raises(InvalidRequest, match="already prepared"):
        ask(state, Op.TXN_PREPARE, NS, b"t1", future_deadline(), "set", pairs(b=2), PERMANENT)


def test_commit_and_abort_are_not_refused_for_an_old_epoch(state: ShardState) -> None:
    ask(state, Op.TXN_PREPARE, NS, b"t1", future_deadline(), "set", pairs(a=2), PERMANENT)
    reply = decode_reply(state.handle(decode_request(encode_request(1, 0, Op.TXN_COMMIT, b"t1", 5))))
    assert reply.status == 0 and value_of(state, "a") == 2


def test_a_prepared_transaction_survives_a_restart_locked_and_marked_recovered(tmp_path: Path) -> None:
    state = open_state(tmp_path / "shard")
    deadline = future_deadline()
    ask(state, Op.MSET, NS, pairs(a=1), PERMANENT)
    ask(state, Op.TXN_PREPARE, NS, b"t1", deadline, "delete", [b"a"], PERMANENT)
    state.store.close()
    again = open_state(tmp_path / "shard")
    try:
        transaction = again.transactions[b"t1"]
        assert transaction.recovered and transaction.deadline == deadline
        assert again.locks == {NS: {b"a": b"t1"}}
        assert value_of(again, "a") == 1
        again.commit(b"t1", again.store.next_timestamp())
        assert value_of(again, "a") is None
    finally:
        again.store.close()


def test_errors_travel_as_code_and_message(state: ShardState) -> None:
    answer = ask(state, Op.MDELETE, NS, [b"missing"])
    code, message = answer["errors"][b"missing"]
    assert code == "key_not_found" and "missing" in message
