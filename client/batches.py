"""Batches — `set_many`, `get_many`, `delete_many`, `consume_many` — as plans any client runs.

A plan is a generator: it yields a step (calls to send at once, at most one per
peer), is sent back each call's outcome (its result, or the `KVError` it raised), and
returns the `BatchResult`. The sync client writes a step's calls on all its links
before it reads any answer; the asyncio client gathers them. Both run a batch the
same way, and neither holds any of its logic.

The keys are split by shard in input order; each shard's part travels as one message
(BEST_EFFORT parts larger than a message may carry go as several).

ALL_OR_NOTHING writes on one shard are one ATOMIC request: one journal record. On
several shards they are a two-phase commit: every shard prepares (validates, locks
the keys, journals the changes and proposes a timestamp); if all agree, the
coordinator journals the decision — the moment the batch commits, at the largest
proposed timestamp — and the shards apply it. Any refusal or failure before the
decision aborts it everywhere; a client that vanishes leaves shards to ask the
coordinator once the transaction's deadline passes (presumed abort: no decision is
an abort). See actors/decisions.py.

`get_many` reads each shard's part in one request; the parts of several shards form
one consistent view — never half of a batch — when no value read is newer than the
earliest shard's read cut (a timestamp each shard returns). Otherwise a write landed
between the reads, and the whole read runs again.
"""

from __future__ import annotations

import operator
import secrets
import time
from collections.abc import Generator, Iterable
from typing import Any, Final

from kvcluster.batch import BatchMode, BatchResult
from kvcluster.batch_common import (
    MISSING,
    batch_failed,
    batch_result,
    checked_mode,
    missing_key,
    read_keys,
    set_pairs,
    write_keys,
)
from kvcluster.client.core import ADMIN, Call, ClientCore, StaleEpoch
from kvcluster.codec import Op
from kvcluster.errors import ClusterUnavailable, InvalidRequest, KVError, Timeout, ValueTooLarge, error_for_code
from kvcluster.failpoints import failpoint
from kvcluster.scope import Scope, checked_scope
from kvcluster.values import pack_values, unpack_value, unpack_values

__all__ = [
    "MAX_PART_KEYS",
    "Notice",
    "Plan",
    "Step",
    "consume_many",
    "delete_many",
    "get_many",
    "set_many",
    "set_many_packed",
]

MAX_PART_KEYS: Final = 1 << 15  # items in one message to a shard (decoders accept 65536)
ITEM_OVERHEAD: Final = 16  # bytes of framing per item, at most, beside its key and value
TXN_WINDOW: Final = 5.0  # seconds a cross-shard batch has from prepare to decision
DECIDE_RETRY: Final = 1.0  # seconds before asking the coordinator for the decision again
DECIDE_GRACE: Final = 60.0  # seconds past the deadline a client may still ask for the decision
# (the coordinator keeps every commit for longer: actors/decisions.py COMMIT_KEPT_FOR)
STALE_RETRIES: Final = 3  # times a part routed with an old cluster map is re-split and sent again


class Notice(list[Call]):
    """Calls sent without waiting for their answers; the plan is sent back []."""


Step = list[Call]
Plan = Generator[Step, list[Any], BatchResult]


def _same(result: Any) -> Any:
    return result


def _by_shard(core: ClientCore, ns: bytes, raw: list[bytes], indices: list[int] | None = None) -> dict[int, list[int]]:
    """The indices of `raw` (or of the subset `indices`) grouped by owning shard, in order."""
    if indices is None:
        indices = list(range(len(raw)))
        if core.map.shards == 1:
            return {0: indices}
        shards = core.map.shards_for(ns, raw)
    else:
        shards = core.map.shards_for(ns, [raw[i] for i in indices])
    groups: list[list[int]] = [[] for _ in range(core.map.shards)]
    appends = [group.append for group in groups]
    for i, shard in zip(indices, shards, strict=True):
        appends[shard](i)
    return {shard: group for shard, group in enumerate(groups) if group}


def _split(parts: dict[int, list[int]], sizes: list[int], budget: int) -> dict[int, list[list[int]]]:
    """Each shard's part cut into messages: one, unless the batch is very large."""
    if len(sizes) <= MAX_PART_KEYS and sum(sizes) + ITEM_OVERHEAD * len(sizes) <= budget:
        return {shard: [part] for shard, part in parts.items()}
    return {shard: _chunks(part, sizes, budget) for shard, part in parts.items()}


def _chunks(indices: list[int], sizes: list[int], budget: int) -> list[list[int]]:
    """`indices` cut into messages of at most MAX_PART_KEYS items and `budget` bytes."""
    chunks: list[list[int]] = [[]]
    used = 0
    for i in indices:
        size = sizes[i] + ITEM_OVERHEAD
        if chunks[-1] and (len(chunks[-1]) >= MAX_PART_KEYS or used + size > budget):
            chunks.append([])
            used = 0
        chunks[-1].append(i)
        used += size
    return chunks


def _part_errors(raw: list[bytes], chunk: list[int], reported: Any) -> dict[int, KVError]:
    return {i: error_for_code(*reported[raw[i]]) for i in chunk if raw[i] in reported}


# -- writes ------------------------------------------------------------------------------


class _Writes:
    """One write batch: its keys, its values (for set), and how each kind travels."""

    def __init__(self, core: ClientCore, ns: bytes, kind: str, keys: list[Any], raw: list[bytes]) -> None:
        self.core = core
        self.ns = ns
        self.kind = kind
        self.keys = keys
        self.raw = raw
        self.packed: list[bytes] = []
        self.scope = int(Scope.PERMANENT)
        self.errors: dict[int, KVError] = {}
        self.data: list[Any] = [MISSING] * len(keys)

    def sizes(self) -> list[int]:
        if self.kind == "set":
            return list(map(operator.add, map(len, self.raw), map(len, self.packed)))
        return list(map(len, self.raw))

    def items(self, chunk: list[int]) -> list[Any]:
        keys = [self.raw[i] for i in chunk]
        if self.kind == "set":
            return list(zip(keys, [self.packed[i] for i in chunk], strict=True))  # tuples go as arrays
        return keys

    def best_effort_call(self, shard: int, chunk: list[int]) -> Call:
        if self.kind == "set":
            return Call(shard, Op.MSET, (self.ns, self.items(chunk), self.scope), _same)
        op = Op.MDELETE if self.kind == "delete" else Op.MCONSUME
        return Call(shard, op, (self.ns, self.items(chunk)), _same)

    def applied(self, chunk: list[int], answer: Any, ts: int) -> None:
        """Record what a shard applied: each key's timestamp, or the value it consumed."""
        reported = answer.get("errors") or {}
        data, raw = self.data, self.raw
        if reported:
            self.errors.update(_part_errors(raw, chunk, reported))
        if self.kind == "consume":
            values = answer.get("values") or {}
            for i in chunk:
                if raw[i] not in reported:
                    data[i] = unpack_value(values[raw[i]])
        elif reported:
            for i in chunk:
                if raw[i] not in reported:
                    data[i] = ts
        else:
            for i in chunk:
                data[i] = ts


def _run_writes(batch: _Writes, mode: BatchMode, timeout: float) -> Plan:
    if not batch.keys:
        return BatchResult(0, {})
    if mode is BatchMode.ALL_OR_NOTHING:
        if batch.errors:
            raise batch_failed(batch.keys, batch.errors, f"{batch.kind}_many")
        yield from _all_or_nothing(batch, timeout)
    else:
        yield from _best_effort(batch)
    return batch_result(batch.keys, batch.data, batch.errors)


def _best_effort(batch: _Writes) -> Generator[Step, list[Any], None]:
    core = batch.core
    pending = [i for i in range(len(batch.keys)) if i not in batch.errors] if batch.errors else None
    sizes = batch.sizes()
    for attempt in range(STALE_RETRIES + 1):
        chunks = _split(_by_shard(core, batch.ns, batch.raw, pending), sizes, core.max_value)
        stale: list[int] = []
        while chunks:
            rounds = [(shard, parts.pop(0)) for shard, parts in chunks.items()]
            chunks = {shard: parts for shard, parts in chunks.items() if parts}
            outcomes = yield [batch.best_effort_call(shard, chunk) for shard, chunk in rounds]
            for (_shard, chunk), outcome in zip(rounds, outcomes, strict=True):
                if isinstance(outcome, StaleEpoch) and attempt < STALE_RETRIES:
                    stale.extend(chunk)  # the map has been refreshed: route these again
                elif isinstance(outcome, KVError):
                    batch.errors.update(dict.fromkeys(chunk, outcome))
                else:
                    batch.applied(chunk, outcome, outcome["ts"])
        if not stale:
            return
        pending = sorted(stale)


def _all_or_nothing(batch: _Writes, timeout: float) -> Generator[Step, list[Any], None]:
    """Run the batch; a part refused for a stale map (nothing applied anywhere: the
    other parts are aborted) makes it run again, routed with the refreshed map."""
    for attempt in range(STALE_RETRIES + 1):
        done = yield from _all_or_nothing_once(batch, timeout, last=attempt == STALE_RETRIES)
        if done:
            return


def _all_or_nothing_once(batch: _Writes, timeout: float, last: bool) -> Generator[Step, list[Any], bool]:
    core, ns = batch.core, batch.ns
    parts = _by_shard(core, ns, batch.raw)
    sizes = batch.sizes()
    for part in parts.values():
        if len(part) > MAX_PART_KEYS or sum(sizes[i] + ITEM_OVERHEAD for i in part) > core.max_value:
            raise InvalidRequest(
                f"an all-or-nothing batch sends at most {MAX_PART_KEYS} keys and {core.max_value} bytes to one "
                "shard; split it, or use BatchMode.BEST_EFFORT"
            )
    if len(parts) == 1:
        ((shard, part),) = parts.items()
        (answer,) = yield [Call(shard, Op.ATOMIC, (ns, batch.kind, batch.items(part), batch.scope), _same)]
        if isinstance(answer, StaleEpoch) and not last:
            return False  # the map has been refreshed: route it again
        if isinstance(answer, KVError):
            raise answer
        if not answer["ok"]:
            raise batch_failed(batch.keys, _part_errors(batch.raw, part, answer["errors"]), f"{batch.kind}_many")
        batch.applied(part, answer, answer["ts"])
        return True
    return (yield from _two_phase(batch, parts, timeout, last))


def _two_phase(
    batch: _Writes, parts: dict[int, list[int]], timeout: float, last: bool = True
) -> Generator[Step, list[Any], bool]:
    ns, shards = batch.ns, sorted(parts)
    txn = secrets.token_bytes(16)
    deadline = time.time_ns() // 1000 + int(min(timeout, TXN_WINDOW) * 1_000_000)
    votes = yield [
        Call(s, Op.TXN_PREPARE, (ns, txn, deadline, batch.kind, batch.items(parts[s]), batch.scope), _same)
        for s in shards
    ]
    failpoint("client.txn_prepared")
    refused: dict[int, KVError] = {}
    prepared = []
    for shard, vote in zip(shards, votes, strict=True):
        if isinstance(vote, KVError):
            # This shard may have prepared all the same: it learns "abort" from the
            # coordinator once the deadline has passed.
            refused.update(dict.fromkeys(parts[shard], vote))
        elif not vote["ok"]:
            refused.update(_part_errors(batch.raw, parts[shard], vote["errors"]))
        else:
            prepared.append(shard)
    if refused:
        unknown = [s for s, vote in zip(shards, votes, strict=True) if isinstance(vote, KVError)]
        if unknown:  # record the abort: those shards may have prepared, and must not wait for the deadline
            yield Notice([Call(ADMIN, Op.TXN_DECIDE, (txn, "abort", 0, deadline, unknown), _same)])
        if prepared:
            yield [Call(s, Op.TXN_ABORT, (txn,), _same) for s in prepared]
        if not last and all(isinstance(error, StaleEpoch) for error in refused.values()):
            return False  # refused only for a stale map (a resize): run it again
        raise batch_failed(batch.keys, refused, f"{batch.kind}_many")
    ts = max(vote["ts"] for vote in votes)
    decision = yield from _decide(txn, ts, deadline, shards, timeout)
    failpoint("client.txn_decided")
    if decision[0] != "commit":
        yield [Call(s, Op.TXN_ABORT, (txn,), _same) for s in shards]
        late = ClusterUnavailable("the batch was not decided before its deadline; retry")
        raise batch_failed(batch.keys, dict.fromkeys(range(len(batch.keys)), late), f"{batch.kind}_many")
    if len(decision) > 1 and type(decision[1]) is int:
        ts = decision[1]  # the coordinator may have moved it past a snapshot's cut
    # Committed. The shards apply it when this reaches them (each then tells the
    # coordinator); until then its keys stay locked, so every read waits for it, and
    # this client's next request to a shard arrives after it. One not reached learns
    # the decision from the coordinator.
    yield Notice([Call(s, Op.TXN_COMMIT, (txn, ts), _same) for s in shards])
    for shard, vote in zip(shards, votes, strict=True):
        batch.applied(parts[shard], vote, ts)
    return True


def _decide(
    txn: bytes, ts: int, deadline: int, shards: list[int], timeout: float
) -> Generator[Step, list[Any], list[Any]]:
    """Ask the coordinator to commit; retried (it answers a retry as it did the first)
    while it restarts. No answer at all leaves the batch's outcome unknown: Timeout."""
    past_deadline = (deadline - time.time_ns() // 1000) / 1e6 + DECIDE_GRACE
    give_up = time.monotonic() + min(max(timeout, TXN_WINDOW), past_deadline)
    while True:
        (answer,) = yield [Call(ADMIN, Op.TXN_DECIDE, (txn, "commit", ts, deadline, shards), _same, DECIDE_RETRY)]
        if isinstance(answer, list) and answer and answer[0] in ("commit", "abort"):
            return answer
        if not isinstance(answer, Timeout) or time.monotonic() > give_up:
            raise Timeout(f"the coordinator did not decide the batch ({answer}); its outcome is unknown until it does")


def set_many(core: ClientCore, ns: bytes, items: Any, mode: BatchMode, scope: Scope, timeout: float) -> Plan:
    keys, values = set_pairs(items)
    scope = checked_scope(scope)
    keys, raw = write_keys(keys)
    batch = _Writes(core, ns, "set", keys, raw)
    batch.scope = int(scope)
    try:
        batch.packed = pack_values(values)
        fits = max(map(len, batch.packed), default=0) <= core.max_value
    except KVError:
        fits = False
    if not fits:  # find which, one by one
        batch.packed = []
        for i, value in enumerate(values):
            try:
                batch.packed.append(core.pack(value))
            except KVError as exc:  # too large, or not something msgpack carries
                batch.errors[i] = exc
                batch.packed.append(b"")
    return _run_writes(batch, checked_mode(mode), timeout)


def set_many_packed(
    core: ClientCore, ns: bytes, keys: list[str], packed: list[bytes], mode: BatchMode, scope: Scope, timeout: float
) -> Plan:
    """set_many of values already in their stored form (msgpack), as a snapshot holds them."""
    listed, raw = write_keys(keys)
    batch = _Writes(core, ns, "set", listed, raw)
    batch.scope = int(scope)
    batch.packed = packed
    for i, value in enumerate(packed):
        if len(value) > core.max_value:
            batch.errors[i] = ValueTooLarge(f"a value of {len(value)} bytes is over the message limit")
    return _run_writes(batch, checked_mode(mode), timeout)


def delete_many(core: ClientCore, ns: bytes, keys: Iterable[Any], mode: BatchMode, timeout: float) -> Plan:
    listed, raw = write_keys(keys)
    return _run_writes(_Writes(core, ns, "delete", listed, raw), checked_mode(mode), timeout)


def consume_many(core: ClientCore, ns: bytes, keys: Iterable[Any], mode: BatchMode, timeout: float) -> Plan:
    listed, raw = write_keys(keys)
    return _run_writes(_Writes(core, ns, "consume", listed, raw), checked_mode(mode), timeout)


# -- reads -------------------------------------------------------------------------------


def get_many(core: ClientCore, ns: bytes, keys: Iterable[Any], mode: BatchMode, timeout: float) -> Plan:
    listed, raw = read_keys(keys)
    return _get_many(core, ns, listed, raw, checked_mode(mode), timeout)


def _get_many(core: ClientCore, ns: bytes, keys: list[Any], raw: list[bytes], mode: BatchMode, timeout: float) -> Plan:
    if not keys:
        return BatchResult(0, {})
    give_up = time.monotonic() + timeout
    sizes = [len(key) for key in raw]
    parts = _by_shard(core, ns, raw)
    stale = 0
    while True:
        rows: list[Any] = [None] * len(keys)
        errors: dict[int, KVError] = {}
        cut, newest, requests = None, 0, 0
        chunks = _split(parts, sizes, core.max_value)
        while chunks:
            rounds = [(shard, parts.pop(0)) for shard, parts in chunks.items()]
            requests += len(rounds)
            outcomes = yield [Call(shard, Op.MGET, (ns, [raw[i] for i in chunk]), _same) for shard, chunk in rounds]
            for (shard, chunk), outcome in zip(rounds, outcomes, strict=True):
                if isinstance(outcome, KVError):
                    errors.update(dict.fromkeys(chunk, outcome))
                    continue
                part_cut, part_rows = outcome
                cut = part_cut if cut is None else min(cut, part_cut)
                for i, row in zip(chunk, part_rows, strict=False):
                    rows[i] = row
                newest = max(newest, max([row[1] for row in part_rows if row is not None], default=0))
                if len(part_rows) < len(chunk):  # the answer filled a message: ask for the rest
                    chunks[shard].insert(0, chunk[len(part_rows) :])
            chunks = {shard: parts for shard, parts in chunks.items() if parts}
        if any(isinstance(error, StaleEpoch) for error in errors.values()) and stale < STALE_RETRIES:
            stale += 1
            parts = _by_shard(core, ns, raw)  # the map has been refreshed (a resize): read again
            continue
        if requests == 1 or cut is None or newest <= cut:
            break  # one request is one view; or no value read is newer than any read
        if time.monotonic() > give_up:
            raise Timeout(f"get_many found its keys changing for {timeout:g} s; no consistent view to return")
    present = [i for i, row in enumerate(rows) if row is not None]
    data = dict(zip([keys[i] for i in present], unpack_values([rows[i][0] for i in present]), strict=True))
    if len(present) < len(keys):
        for i, row in enumerate(rows):
            if row is None and i not in errors:
                errors[i] = missing_key(keys[i])
    if not errors:
        return BatchResult(len(data), data)
    if mode is BatchMode.ALL_OR_NOTHING:
        raise batch_failed(keys, errors, "get_many", "no data is returned")
    return BatchResult(len(data), data, {keys[i]: errors[i] for i in sorted(errors)})
