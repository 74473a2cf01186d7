"""Point-in-time recovery of a whole cluster, offline: its state at one moment, as a new data dir.

    kvcluster.recover("./kv-data", at="2025-01-31T12:00:00Z", into="./kv-at-noon")

Every shard's history (archives, then journal) is replayed up to `at`, keeping each
value's own timestamp; the result is written as a new data directory that
`kvcluster.start` serves. The source may belong to a running cluster: nothing there
is locked or written, and a shard whose journal rotates while it is read is read again.

Cross-shard transactions: a shard that has a transaction's PREPARE but neither its
COMMIT nor its ABORT asks the coordinator's decision log (DATA/coordinator/decisions,
read the same way). A commit at or before `at` is applied at its timestamp;
anything else is not. The log is read before the shards and again after them: a
commit decision leaves the log only once every participant journaled its COMMIT, and
none is taken past the transaction's deadline, so one missing from both reads whose
deadline had passed when recovery began was never committed. One still undecided
makes recovery wait (at most until its deadline) and read again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from kvcluster.actors.decisions import COMMIT, Decision
from kvcluster.datadir import DataDir
from kvcluster.errors import InvalidRequest, StorageError
from kvcluster.journal.following import StoreHistory, replay_history
from kvcluster.journal.pitr import earliest_recoverable
from kvcluster.journal.replay import Entries, Prepared
from kvcluster.pitr_output import write_data_dir
from kvcluster.values import unpack_value

__all__ = ["RecoveryReport", "iso_time", "recover", "recover_state", "to_timestamp"]

Moment = int | str | datetime
State = dict[tuple[str, str], tuple[Any, int]]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_DECISIONS_NS: Final = b"txn"
UNDECIDED_WAIT: Final = 30.0  # seconds to wait for transactions still undecided, at most
_POLL: Final = 0.05


@dataclass
class RecoveryReport:
    """What `recover` built."""

    at: int  # the moment recovered to, µs since the epoch
    into: str  # the new data directory
    keys: list[int]  # keys per shard
    earliest: int  # how far back the source's history reached
    transactions: int  # transactions in doubt on some shard, settled from the decision log
    seconds: float  # time taken

    @property
    def at_iso(self) -> str:
        return iso_time(self.at)


@dataclass
class _Cut:
    """Every shard's state at `at`, transactions settled."""

    at: int
    manifest: dict[str, Any]
    shards: list[Entries]
    earliest: int
    newest: int  # the largest timestamp read anywhere
    settled: int = 0
    commits: dict[bytes, int] = field(default_factory=dict)


def to_timestamp(at: Moment) -> int:
    """µs since the epoch of `at`: an int (µs), an ISO-8601 string, or a datetime.

    A string of digits is taken as µs. An ISO-8601 time or a datetime without a
    timezone means UTC (not local time).
    """
    if isinstance(at, bool):
        raise InvalidRequest(f"a moment is µs since the epoch, ISO-8601 or a datetime, not {at!r}")
    if isinstance(at, int):
        if at < 0:
            raise InvalidRequest(f"a timestamp is >= 0 µs since the epoch, not {at}")
        return at
    if isinstance(at, str):
        text = at.strip()
        if text.isdigit():
            return int(text)
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidRequest(f"{text!r} is neither µs since the epoch nor an ISO-8601 time") from None
    if not isinstance(at, datetime):
        raise InvalidRequest(f"a moment is µs since the epoch, ISO-8601 or a datetime, not {at!r}")
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    ts = (at - _EPOCH) // _MICROSECOND
    if ts < 0:
        raise InvalidRequest(f"{at.isoformat()} is before the epoch")
    return ts


def iso_time(ts: int) -> str:
    """`ts` (µs since the epoch) as ISO-8601 UTC, e.g. 2025-01-31T12:00:00.000001+00:00."""
    try:
        return (_EPOCH + ts * _MICROSECOND).isoformat(timespec="microseconds")
    except OverflowError:
        return "after 9999-12-31"


def recover_state(data_dir: str | os.PathLike[str], at: Moment) -> State:
    """The cluster's permanent state at `at`: {(namespace, key): (value, timestamp)}.

    Every write with a timestamp <= at, on every shard; nothing is written anywhere.
    Raises StorageError when `at` is older than retention kept (saying how far back
    it reaches) or when a journal or archive is damaged.
    """
    cut = _read_cut(DataDir.at(data_dir), to_timestamp(at))
    return {
        (ns.decode(), key.decode()): (unpack_value(value), ts)
        for entries in cut.shards
        for ns, space in entries.items()
        for key, (value, ts) in space.items()
    }


def recover(data_dir: str | os.PathLike[str], at: Moment, into: str | os.PathLike[str]) -> RecoveryReport:
    """Build a new data directory `into` holding the cluster at `data_dir` as it was at `at`.

    Each shard gets exactly the writes with a timestamp <= at, with their timestamps;
    `into` gets a cluster.json with the same shard count, namespaces, limits and
    retention, and no pending transactions. It is built in a hidden sibling directory
    renamed into place at the end, so it never exists half-built (a crash leaves only
    `.<name>.recovering-*` behind). Refused if `into` exists and is not empty.
    """
    started = time.monotonic()
    source = DataDir.at(data_dir)
    target = DataDir.at(into)
    _check_target(source, target)
    cut = _read_cut(source, to_timestamp(at))
    base_ts = min(cut.at, max(cut.newest, *cut.commits.values(), 0))
    keys = write_data_dir(source, target, cut.manifest, cut.shards, base_ts, cut.at)
    return RecoveryReport(cut.at, target.root, keys, cut.earliest, cut.settled, time.monotonic() - started)


def _check_target(source: DataDir, target: DataDir) -> None:
    if os.path.exists(target.root) and (not os.path.isdir(target.root) or os.listdir(target.root)):
        raise InvalidRequest(f"{target.root} exists and is not empty: recovery builds a new data directory")
    inside = os.path.commonpath([source.root, target.root]) == source.root
    if inside:
        raise InvalidRequest(f"{target.root} is inside the data directory it would recover")


def _read_cut(data: DataDir, at: int) -> _Cut:
    manifest = data.read_manifest()
    shards = manifest["shards"]
    _check_reach(data, shards, at, [_earliest(data.shard_dir(i)) for i in range(shards)])  # fail fast
    give_up = time.monotonic() + UNDECIDED_WAIT
    while True:
        began = time.time_ns() // 1000
        before = _decisions(data)
        histories = [replay_history(data.shard_dir(i), at) for i in range(shards)]
        _check_reach(data, shards, at, [h.earliest for h in histories])  # retention may have moved on
        in_doubt = {txn: p for h in histories for txn, p in h.in_doubt.items()}
        after = _decisions(data) if in_doubt else {}
        outcomes = {txn: _outcome(txn, p, before, after, began) for txn, p in in_doubt.items()}
        undecided = [txn for txn, outcome in outcomes.items() if outcome is _UNDECIDED]
        if not undecided:
            break
        if time.monotonic() > give_up:
            names = ", ".join(txn.hex() for txn in undecided[:5])
            raise StorageError(f"transactions still undecided after {UNDECIDED_WAIT:g} s: {names}")
        time.sleep(_POLL)  # until its client decides it or its deadline passes
    commits = {txn: ts for txn, ts in outcomes.items() if isinstance(ts, int) and ts <= at}
    for history in histories:
        _apply_commits(history, commits)
    return _Cut(
        at,
        manifest,
        [h.replay.tidy() for h in histories],
        max(h.earliest for h in histories),
        max(h.newest for h in histories),
        len(in_doubt),
        commits,
    )


def _check_reach(data: DataDir, shards: int, at: int, earliest: list[int]) -> None:
    """Refuse `at` before the latest of the shards' earliest recoverable moments."""
    reach = max(earliest, default=0)
    if at < reach:
        shard = earliest.index(reach)
        raise StorageError(
            f"cannot recover {data.root} to {at} ({iso_time(at)}): retention kept history back to "
            f"{reach} µs ({iso_time(reach)}) only, on every shard (the limit is shard {shard}'s oldest archive)",
            path=data.shard_dir(shard),
            timestamp=reach,
        )


def _earliest(directory: str) -> int:
    """How far back a shard's history reaches, 0 if that cannot be told yet (the replay will)."""
    try:
        return earliest_recoverable(directory)
    except (OSError, StorageError):
        return 0


class _Undecided:
    pass


_UNDECIDED: Final = _Undecided()


def _outcome(
    txn: bytes, prepared: Prepared, before: Mapping[bytes, Decision], after: Mapping[bytes, Decision], began: int
) -> int | _Undecided | None:
    """The commit timestamp of a transaction in doubt, None if it was not committed."""
    decision = before.get(txn) or after.get(txn)
    if decision is not None:
        return decision.ts if decision.outcome == COMMIT else None
    if prepared.deadline < began:
        return None  # no commit is taken past the deadline, and none left the log unapplied
    return _UNDECIDED


def _apply_commits(history: StoreHistory, commits: Mapping[bytes, int]) -> None:
    """Apply the transactions in doubt here that committed at or before the cut."""
    entries = history.replay.entries
    for txn, prepared in history.in_doubt.items():
        ts = commits.get(txn)
        if ts is None:
            continue
        space = entries.setdefault(prepared.ns, {})
        for key, value in prepared.changes:
            current = space.get(key)
            if current is not None and current[1] >= ts:
                continue  # written after the transaction (its locks were gone): that write stands
            if value is None:
                space.pop(key, None)
            else:
                space[key] = (value, ts)


def _decisions(data: DataDir) -> dict[bytes, Decision]:
    """The decision log's current content (empty if the coordinator never ran)."""
    directory = os.path.join(data.coordinator_dir, "decisions")
    if not os.path.isdir(directory) or not os.path.exists(os.path.join(directory, "journal")):
        return {}
    found: dict[bytes, Decision] = {}
    for key, (raw, _ts) in replay_history(directory).replay.entries.get(_DECISIONS_NS, {}).items():
        try:
            found[bytes.fromhex(key.decode())] = Decision.unpack(raw)
        except (ValueError, TypeError) as exc:
            raise StorageError(f"{directory}: unreadable decision {key!r}: {exc}", path=directory) from None
    return found
