"""Isolation and two-phase commit against a real cluster: reads wait for a prepared
key's outcome, undecided transactions are aborted after their deadline, decided ones
reach every participant, concurrent readers never see half a batch, and writers with
crossing key sets never deadlock."""

from __future__ import annotations

import functools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import BatchFailed, BatchMode, Client, Cluster, ClusterUnavailable, InvalidRequest, Namespace
from kvcluster.client.core import ADMIN, Call
from kvcluster.codec import Op
from kvcluster.scope import Scope
from kvcluster.values import pack_value

pytestmark = pytest.mark.slow

AON = BatchMode.ALL_OR_NOTHING


def raw(result: Any) -> Any:
    return result


def shard_stat(client: Client, name: str) -> int:
    return sum(shard[name] or 0 for shard in client.stats()["shards"])


class Txn:
    """A transaction driven by hand, one protocol message at a time."""

    def __init__(self, client: Client, ns: Namespace, window: float = 10.0) -> None:
        self.client = client
        self.ns = ns.name.encode()
        self.id = secrets.token_bytes(16)
        self.deadline = time.time_ns() // 1000 + int(window * 1_000_000)
        self.shards: list[int] = []
        self.ts = 0

    def shard_of(self, key: str) -> int:
        return self.client.core.map.shard_for(self.ns, key.encode())

    def prepare(self, **values: Any) -> None:
        by_shard: dict[int, list[list[Any]]] = {}
        for key, value in values.items():
            by_shard.setdefault(self.shard_of(key), []).append([key.encode(), pack_value(value)])
        for shard, items in sorted(by_shard.items()):
            call = Call(
                shard, Op.TXN_PREPARE, (self.ns, self.id, self.deadline, "set", items, int(Scope.PERMANENT)), raw
            )
            vote = self.client.run(call)
            assert vote["ok"], vote
            self.shards.append(shard)
            self.ts = max(self.ts, vote["ts"])

    def decide(self) -> list[Any]:
        answer: list[Any] = self.client.run(
            Call(ADMIN, Op.TXN_DECIDE, (self.id, "commit", self.ts, self.deadline, self.shards), raw)
        )
        return answer

    def commit(self) -> None:
        for shard in self.shards:
            self.client.run(Call(shard, Op.TXN_COMMIT, (self.id, self.ts), raw))

    def abort(self) -> None:
        for shard in self.shards:
            self.client.run(Call(shard, Op.TXN_ABORT, (self.id,), raw))


class Background(threading.Thread):
    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:  # reported by outcome()
            self.error = exc

    def outcome(self, timeout: float = 20.0) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "the background call did not finish"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def reader(cluster: Cluster, fresh_ns: Namespace) -> Iterator[Namespace]:
    """The same namespace through a second client (its own connections)."""
    with cluster.connect(timeout=10.0) as other:
        yield other.namespace(fresh_ns.name)


READS: dict[str, Callable[[Namespace], Any]] = {
    "get": lambda ns: ns.get("a"),
    "get_many": lambda ns: ns.get_many(["a", "b"], AON).data["a"],
    "get_many_best": lambda ns: ns.get_many(["a", "b"], BatchMode.BEST_EFFORT).data["a"],
    "items": lambda ns: dict(ns.items())["a"],
    "exists_then_get": lambda ns: ns.exists("a") and ns.get("a"),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
@pytest.mark.parametrize("outcome", ["commit", "abort"])
def test_a_read_of_a_prepared_key_waits_for_the_outcome(
    client: Client, fresh_ns: Namespace, reader: Namespace, read: Callable[[Namespace], Any], outcome: str
) -> None:
    fresh_ns.set_many({"a": "old", "b": "old"}, AON)
    txn = Txn(client, fresh_ns)
    txn.prepare(a="new", b="new")
    waiting = Background(lambda: read(reader))
    waiting.start()
    wait_until(lambda: shard_stat(client, "requests_waiting") >= 1, "the read waits on the lock")
    if outcome == "commit":
        assert txn.decide() == ["commit", txn.ts]
        txn.commit()
        assert waiting.outcome() == "new"
    else:
        txn.abort()
        assert waiting.outcome() == "old"


def test_writes_to_a_prepared_key_wait_too_and_keep_their_order(
    client: Client, fresh_ns: Namespace, reader: Namespace
) -> None:
    fresh_ns.set("a", 0)
    txn = Txn(client, fresh_ns)
    txn.prepare(a=1)
    write = Background(lambda: reader.set("a", 2))
    write.start()
    wait_until(lambda: shard_stat(client, "requests_waiting") >= 1, "the write waits on the lock")
    txn.decide()
    txn.commit()
    write.outcome()
    assert fresh_ns.get("a") == 2  # applied after the transaction, not before


def test_a_transaction_nobody_decides_is_aborted_after_its_deadline(client: Client, fresh_ns: Namespace) -> None:
    fresh_ns.set_many({"a": "old", "b": "old", "c": "old"}, AON)
    txn = Txn(client, fresh_ns, window=0.5)
    txn.prepare(a="new", b="new", c="new")
    assert len(txn.shards) >= 2
    wait_until(lambda: shard_stat(client, "transactions_prepared") == 0, "the shards resolve the transaction")
    assert fresh_ns.get_many(["a", "b", "c"], AON).data == {"a": "old", "b": "old", "c": "old"}
    assert txn.decide() == ["abort"]  # a late decision cannot commit it any more


def test_a_decided_transaction_reaches_shards_its_client_never_told(client: Client, fresh_ns: Namespace) -> None:
    txn = Txn(client, fresh_ns, window=0.5)
    txn.prepare(a=1, b=2, c=3, d=4)
    assert txn.decide() == ["commit", txn.ts]  # ... and the client vanishes
    wait_until(lambda: shard_stat(client, "transactions_prepared") == 0, "the shards learn the decision")
    assert fresh_ns.get_many(["a", "b", "c", "d"], AON).data == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert {fresh_ns.get_versioned(key)[1] for key in "abcd"} == {txn.ts}  # type: ignore[index]


def test_a_decision_past_the_deadline_is_abort(client: Client, fresh_ns: Namespace) -> None:
    txn = Txn(client, fresh_ns, window=0.3)
    txn.prepare(a=1, b=2)
    wait_until(lambda: time.time_ns() // 1000 > txn.deadline, "the deadline passes")
    assert txn.decide() == ["abort"]
    txn.abort()
    assert fresh_ns.get_many(["a", "b"], BatchMode.BEST_EFFORT).processed == 0


@pytest.mark.parametrize(("op", "args"), [(Op.TXN_STATUS, (b"t", 1)), (Op.TXN_FORGET, ([b"t"], 0))])
def test_only_shards_may_report_or_ask_about_transactions(client: Client, op: Op, args: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidRequest, match="shards only"):
        client.run(Call(ADMIN, op, args, raw))


def test_the_decision_log_forgets_batches_every_shard_has_applied(client: Client, fresh_ns: Namespace) -> None:
    for i in range(20):
        fresh_ns.set_many(dict.fromkeys(KEYS, i), AON)
    wait_until(lambda: client.stats()["coordinator"]["commits_unapplied"] == 0, "the decisions are dropped")


def test_a_conflicting_batch_fails_with_a_retryable_error(client: Client, fresh_ns: Namespace) -> None:
    txn = Txn(client, fresh_ns)
    txn.prepare(a=1, b=2)
    with pytest.raises(BatchFailed) as failed:
        fresh_ns.set_many({"a": 9, "z": 9, "y": 9, "x": 9}, AON)
    assert isinstance(failed.value.errors["a"], ClusterUnavailable)
    assert "retry" in str(failed.value.errors["a"])
    txn.abort()
    assert fresh_ns.set_many({"a": 9, "z": 9, "y": 9, "x": 9}, AON).processed == 4


# -- concurrency ----------------------------------------------------------------------


KEYS = [f"key-{i:02d}" for i in range(24)]  # spread over all three shards


def test_a_concurrent_reader_never_sees_part_of_a_batch(cluster: Cluster, fresh_ns: Namespace) -> None:
    fresh_ns.set_many(dict.fromkeys(KEYS, 0), AON)
    stop = threading.Event()
    torn: list[dict[str, Any]] = []
    reads = [0]

    def read_forever(mode: BatchMode) -> None:
        with cluster.connect(timeout=10.0) as client:
            ns = client.namespace(fresh_ns.name)
            while not stop.is_set():
                data = ns.get_many(KEYS, mode).data
                reads[0] += 1
                if len(set(data.values())) != 1:
                    torn.append(data)

    readers = [Background(functools.partial(read_forever, mode)) for mode in (AON, BatchMode.BEST_EFFORT)]
    for thread in readers:
        thread.start()
    try:
        for generation in range(1, 301):
            fresh_ns.set_many(dict.fromkeys(KEYS, generation), AON)
    finally:
        stop.set()
    for thread in readers:
        thread.outcome()
    assert not torn, f"{len(torn)} of {reads[0]} reads saw a partial batch, e.g. {torn[0]}"
    assert reads[0] > 0


def test_writers_with_crossing_key_sets_never_deadlock(cluster: Cluster, fresh_ns: Namespace) -> None:
    batches = 100
    conflicts = [0, 0]
    refusals: list[Exception] = []

    def write(writer: int) -> None:
        keys = KEYS if writer == 0 else KEYS[::-1]  # the same keys, locked in the other order
        with kvcluster.connect(cluster.data_dir, timeout=10.0) as client:
            ns = client.namespace(fresh_ns.name)
            done = 0
            while done < batches:
                try:
                    ns.set_many(dict.fromkeys(keys, (writer, done)), AON)
                    done += 1
                except BatchFailed as exc:
                    refusals.extend(exc.errors.values())
                    conflicts[writer] += 1

    writers = [Background(functools.partial(write, writer)) for writer in (0, 1)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.outcome(timeout=120.0)
    assert all(isinstance(e, ClusterUnavailable) and "conflict" in str(e) for e in refusals)
    final = fresh_ns.get_many(KEYS, AON).data
    assert len({tuple(value) for value in final.values()}) == 1  # one writer's last batch, whole
    assert next(iter(final.values()))[1] == batches - 1
