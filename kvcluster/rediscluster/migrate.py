"""`export`: copy a kvcluster — a running one, or a snapshot file — into a Redis Cluster,
values and timestamps intact (`kvcluster export --to redis+cluster://...`).

    report = export("./kv-data", "redis+cluster://10.0.0.5:7000")
    report = export("all.kvs", "redis+cluster://10.0.0.5:7000", namespaces=["users"])

What it copies, in order:

1. **Namespaces with their limits.** One missing on the target is created with the
   source's limits; one that exists with the same limits is reused; one whose limits
   differ stops the export before any key is written (InvalidRequest naming each),
   unless `force=True`: then the keys go into it and its limits stay as they are.
2. **Every permanent key**, read page by page (a running cluster is scanned shard by
   shard, a snapshot streamed block by block: never everything at once), each written
   as the record layout.py defines — the source's timestamp, scope permanent, and the
   source's msgpack bytes as they are (never unpacked and packed again). Records go
   out in chunks of at most CHUNK_KEYS keys / CHUNK_BYTES bytes, one pipeline per
   chunk (redis-py sends it node by node: one round trip per node), each key by the
   IMPORT script (scripts.py).
3. **The newer record wins.** IMPORT writes a record only where the key is absent or
   holds an older timestamp; a record as new or newer on the target (the same one
   copied before, or a later write made there) is kept. So running an export again
   changes nothing, and no key ever moves back in time. A key locked by a cross-slot
   batch is resolved first, as every write does (locks.py).
4. **Key counters** of namespaces with `max_keys` > 0: raised by the keys each chunk
   created, and recounted by SCAN at the end (which also repairs a counter left wrong
   by an export that was interrupted). Stop writers to those namespaces meanwhile.

Ephemeral values are memory-only by contract: they are not copied, only counted
(`skipped_ephemeral`). A snapshot holds none.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

from kvcluster.client.sync import Client
from kvcluster.errors import InvalidRequest, KVError, NamespaceExists, NamespaceNotFound, StorageError
from kvcluster.keys import encode_namespace
from kvcluster.rediscluster import DEFAULT_TIMEOUT, connect
from kvcluster.rediscluster.address import is_redis_cluster
from kvcluster.rediscluster.export_sources import ClusterSource, Row, SnapshotSource, Source
from kvcluster.rediscluster.layout import Limits, counter_key, encode_record, value_key
from kvcluster.rediscluster.locks import write_each
from kvcluster.rediscluster.plans import Command
from kvcluster.rediscluster.registry import count_keys
from kvcluster.rediscluster.scripts import IMPORT
from kvcluster.scope import Scope

if TYPE_CHECKING:
    from kvcluster.rediscluster.sync import RedisClusterClient

__all__ = [
    "CHUNK_BYTES",
    "CHUNK_KEYS",
    "ExportReport",
    "NamespaceReport",
    "Progress",
    "export",
    "open_source",
]

CHUNK_KEYS: Final = 1000  # records in one pipelined chunk, at most ...
CHUNK_BYTES: Final = 4 << 20  # ... and record bytes (a chunk of one larger value goes alone)
KEPT_ERRORS: Final = 10  # per-key failures a namespace's report keeps the text of

Progress = Callable[[str, int, "int | None"], None]
"""Called as progress(namespace, keys done, keys expected or None): with 0 when the
namespace starts, then after each chunk. Keys done counts copied, kept, failed and
skipped ephemeral keys; the expected count is the source's (all scopes)."""

_CREATED, _REPLACED, _KEPT = 1, 2, 0  # IMPORT's answers


@dataclass
class NamespaceReport:
    """What an export did to one namespace."""

    name: str
    max_keys: int  # the target's limits, after the export
    max_value_bytes: int
    target: str  # "created", "reused" (same limits), or "forced" (other limits, kept)
    keys: int = 0  # permanent keys read from the source
    created: int = 0  # ... written where the target had no such key
    replaced: int = 0  # ... written over an older record
    kept: int = 0  # ... not written: the target's record is as new or newer
    failed: int = 0  # ... not written: the target's key does not hold a kvcluster record
    skipped_ephemeral: int = 0  # ephemeral keys of the source, not copied (memory-only)
    bytes: int = 0  # msgpack value bytes written (created and replaced)
    counted: int | None = None  # the key counter after the recount (only when max_keys > 0)
    errors: list[str] = field(default_factory=list)  # the first KEPT_ERRORS failures
    notes: list[str] = field(default_factory=list)  # what a reader should know

    @property
    def written(self) -> int:
        return self.created + self.replaced


@dataclass
class ExportReport:
    """The summary of one export: per namespace, and totals."""

    source: str
    target: str
    namespaces: list[NamespaceReport]
    seconds: float = 0.0

    @property
    def keys(self) -> int:
        return sum(ns.keys for ns in self.namespaces)

    @property
    def written(self) -> int:
        return sum(ns.written for ns in self.namespaces)

    @property
    def kept(self) -> int:
        return sum(ns.kept for ns in self.namespaces)

    @property
    def failed(self) -> int:
        return sum(ns.failed for ns in self.namespaces)

    @property
    def skipped_ephemeral(self) -> int:
        return sum(ns.skipped_ephemeral for ns in self.namespaces)

    @property
    def bytes(self) -> int:
        return sum(ns.bytes for ns in self.namespaces)

    def as_dict(self) -> dict[str, Any]:
        totals = ("keys", "written", "kept", "failed", "skipped_ephemeral", "bytes")
        return {
            "source": self.source,
            "target": self.target,
            "seconds": round(self.seconds, 3),
            **{name: getattr(self, name) for name in totals},
            "namespaces": [{**asdict(ns), "written": ns.written} for ns in self.namespaces],
        }


def open_source(source: Source | Client | str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT) -> Source:
    """What `source` names: a snapshot file, a running cluster's data directory or its
    router's tcp:// address, or a connected local Client (left open); a Source is
    taken as it is. InvalidRequest if it is none of these."""
    if isinstance(source, Source):
        return source
    if isinstance(source, Client):
        return ClusterSource(source)
    text = os.fspath(source)
    if is_redis_cluster(text):
        raise InvalidRequest(f"the source {text!r} is a Redis Cluster: export copies from a kvcluster or a snapshot")
    if text.startswith("tcp://"):
        return ClusterSource.connect(text, timeout=timeout)
    if os.path.isfile(text):
        return SnapshotSource(text)
    if os.path.isdir(text):
        return ClusterSource.connect(text, timeout=timeout)
    raise InvalidRequest(f"no data directory or snapshot file at {text!r}")


def export(
    source: Source | Client | str | os.PathLike[str],
    target_address: str,
    *,
    namespaces: Iterable[str] | None = None,
    progress: Progress | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> ExportReport:
    """Copy `source` (see open_source) into the Redis Cluster at `target_address`: the
    namespaces named (default: all of the source's), with their limits and their
    permanent keys, values and timestamps intact. Raises KVError subclasses; running it
    again after a failure is safe (the newer record wins)."""
    started = time.monotonic()
    if not is_redis_cluster(target_address):
        raise InvalidRequest(f"the target must be a redis+cluster:// address, not {target_address!r}")
    with connect(target_address, timeout=timeout) as target:
        opened = open_source(source, timeout=timeout)
        try:
            limits = _chosen(opened.namespaces(), namespaces)
            reports = _prepare(target, limits, force)
            report = ExportReport(opened.description, target.address, list(reports.values()))
            _Copy(target, reports, progress).run(opened, list(limits))
        finally:
            if opened is not source and not isinstance(source, Client):
                opened.close()
    report.seconds = time.monotonic() - started
    return report


def _chosen(available: dict[str, Limits], wanted: Iterable[str] | None) -> dict[str, Limits]:
    """The namespaces to copy, with the source's limits; NamespaceNotFound for one it lacks."""
    if wanted is None:
        return available
    if isinstance(wanted, str):
        raise InvalidRequest("namespaces is a list of names, not one str")
    chosen: dict[str, Limits] = {}
    for name in wanted:
        if name not in available:
            have = ", ".join(sorted(available)) or "none"
            raise NamespaceNotFound(f"namespace {name!r} is not in the source (it has: {have})")
        chosen[name] = available[name]
    return chosen


def _prepare(target: RedisClusterClient, limits: dict[str, Limits], force: bool) -> dict[str, NamespaceReport]:
    """Create the namespaces missing on the target; check the others' limits first, so
    a conflict stops the export before anything is written."""
    existing = target.run(target.registry.entries())
    conflicts = [
        f"{name!r} has {_limits_text(existing[name])} there, {_limits_text(wanted)} here"
        for name, wanted in limits.items()
        if name in existing and existing[name] != wanted
    ]
    if conflicts and not force:
        raise InvalidRequest(
            f"namespaces exist on the target with other limits: {'; '.join(conflicts)}. "
            "Change them there (update_namespace), or force the export into them as they are (--force)"
        )
    reports: dict[str, NamespaceReport] = {}
    for name, wanted in limits.items():
        have = existing.get(name)
        if have is None:
            try:
                target.create_namespace(name, max_keys=wanted.max_keys, max_value_bytes=wanted.max_value_bytes)
                have, how = wanted, "created"
            except NamespaceExists:  # made meanwhile by another client
                have = target.run(target.registry.limits(name, fresh=True))
                if have != wanted and not force:
                    raise InvalidRequest(
                        f"namespace {name!r} was just created on the target with {_limits_text(have)}, "
                        f"not {_limits_text(wanted)}; run the export again"
                    ) from None
                how = "reused" if have == wanted else "forced"
        else:
            how = "reused" if have == wanted else "forced"
        report = NamespaceReport(name, have.max_keys, have.max_value_bytes, how)
        if how == "forced":
            report.notes.append(f"the target's limits ({_limits_text(have)}) differ from the source's; kept")
        reports[name] = report
    return reports


def _limits_text(limits: Limits) -> str:
    return f"max_keys={limits.max_keys}, max_value_bytes={limits.max_value_bytes}"


class _Copy:
    """The copy itself: rows in, chunks of IMPORT calls out, counts kept per namespace."""

    def __init__(
        self, target: RedisClusterClient, reports: dict[str, NamespaceReport], progress: Progress | None
    ) -> None:
        self.target = target
        self.reports = reports
        self.progress = progress
        self.totals: dict[str, int | None] = {}
        self.done = dict.fromkeys(reports, 0)
        self.spaces = {name: encode_namespace(name) for name in reports}

    def run(self, source: Source, names: list[str]) -> None:
        self.totals = source.expected(names)
        for name in names:
            self._tell(name)
        pending: list[Row] = []
        size = 0
        for row in source.rows(names):
            record_bytes = len(row[1]) + len(row[2]) + 16
            if pending and (len(pending) >= CHUNK_KEYS or size + record_bytes > CHUNK_BYTES):
                self._write(pending)
                pending, size = [], 0
            pending.append(row)
            size += record_bytes
        if pending:
            self._write(pending)
        for name in names:
            skipped = source.ephemeral(name)
            if skipped:
                self.reports[name].skipped_ephemeral += skipped
                self.reports[name].notes.append(f"{skipped} ephemeral keys not copied (memory-only by contract)")
                self.done[name] += skipped
                self._tell(name)
            self._recount(name)

    def _tell(self, name: str) -> None:
        if self.progress is not None:
            self.progress(name, self.done[name], self.totals.get(name))

    def _write(self, rows: list[Row]) -> None:
        step = [
            IMPORT.call([value_key(self.spaces[name], key)], [encode_record(ts, Scope.PERMANENT, packed)])
            for name, key, packed, ts in rows
        ]
        created: dict[str, int] = {}
        stored = [value_key(self.spaces[name], key) for name, key, _packed, _ts in rows]
        results = self.target.run(write_each(step, stored, time.monotonic() + self.target.timeout))
        for (name, key, packed, _ts), result in zip(rows, results, strict=True):
            report = self.reports[name]
            report.keys += 1
            self.done[name] += 1
            if isinstance(result, StorageError):  # that key only: it holds something else
                report.failed += 1
                if len(report.errors) < KEPT_ERRORS:
                    report.errors.append(f"{key.decode(errors='replace')!r}: {result}")
            elif isinstance(result, KVError):  # the cluster failed: stop (a new run is safe)
                raise result
            elif result == _KEPT:
                report.kept += 1
            else:
                report.created += result == _CREATED
                report.replaced += result == _REPLACED
                report.bytes += len(packed)
                if result == _CREATED:
                    created[name] = created.get(name, 0) + 1
        raises = [
            Command(("INCRBY", counter_key(self.spaces[name]), count))
            for name, count in created.items()
            if self.reports[name].max_keys
        ]
        if raises:
            for result in self.target.execute(raises):
                if isinstance(result, KVError):
                    raise result
        for name in dict.fromkeys(row[0] for row in rows):
            self._tell(name)

    def _recount(self, name: str) -> None:
        """Set a max_keys namespace's counter to its keys, counted by SCAN."""
        report = self.reports[name]
        if not report.max_keys:
            return
        ns = self.spaces[name]
        keys = self.target.run(count_keys(ns, self.target.primaries()))
        for result in self.target.execute([Command(("SET", counter_key(ns), keys))]):
            if isinstance(result, KVError):
                raise result
        report.counted = keys
        if keys > report.max_keys:
            report.notes.append(
                f"holds {keys} keys, over its max_keys={report.max_keys}: new keys are refused until some go"
            )
