"""Writing a recovered cluster: a new data directory, built aside and renamed into place.

Each shard directory gets one journal holding its live entries as PUT records with
their original timestamps — what rotation writes as a journal's compacted prefix —
whose `base_ts` is the recovery cut: the new store's clock starts there, and its own
point-in-time recovery reaches back to the cut, not before. The manifest keeps the
shard count, epoch, durability, namespaces and retention; endpoints name the new
location; no decision log is copied (every transaction is settled by then).
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Final

from kvcluster.config import Retention
from kvcluster.datadir import DataDir
from kvcluster.errors import StorageError
from kvcluster.journal.archive import ACTIVE_NAME, NEXT_NAME
from kvcluster.journal.format import HEADER_SIZE, encode_put, record_size
from kvcluster.journal.fs import FileSystem
from kvcluster.journal.replay import Entries
from kvcluster.journal.writer import build_journal, storage_error
from kvcluster.scope import Scope

__all__ = ["recovered_manifest", "write_data_dir"]

_PERMANENT: Final = int(Scope.PERMANENT)
_DROP_MARKS: Final = ("dropping", "dropped_by")


def write_data_dir(
    source: DataDir, target: DataDir, manifest: dict[str, Any], shards: list[Entries], base_ts: int, at: int
) -> list[int]:
    """Write `shards` (one Entries per shard) as the data directory `target`; returns keys per shard.

    `target` must not exist or be an empty directory; on any failure nothing is left
    at `target` and the directory being built is removed.
    """
    parent = os.path.dirname(target.root)
    fs = FileSystem()
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        building = tempfile.mkdtemp(prefix=f".{os.path.basename(target.root)}.recovering-", dir=parent)
    except OSError as exc:
        raise storage_error(exc, "creating a directory in", parent) from exc
    try:
        keys = [
            _write_shard(fs, os.path.join(building, target.shard_name(i)), entries, base_ts)
            for i, entries in enumerate(shards)
        ]
        DataDir(building).write_manifest(recovered_manifest(source, target, manifest, shards, at))
        fs.fsync_dir(building)
        os.rename(building, target.root)  # also replaces an empty directory
        fs.fsync_dir(parent)
    except BaseException as exc:
        shutil.rmtree(building, ignore_errors=True)
        if isinstance(exc, OSError):
            raise storage_error(exc, "building the recovered data directory", target.root) from exc
        raise
    return keys


def recovered_manifest(
    source: DataDir, target: DataDir, manifest: dict[str, Any], shards: list[Entries], at: int
) -> dict[str, Any]:
    """The source's manifest for the new location.

    Namespaces are those of the source, plus any that held keys at `at` and was
    deleted since (its limits unknown: none), and less any being deleted that held
    none.
    """
    count = manifest["shards"]
    holding = {ns.decode() for entries in shards for ns in entries}
    spaces: dict[str, Any] = {}
    for name, entry in manifest.get("namespaces", {}).items():
        if entry.get("dropping") and name not in holding:
            continue
        spaces[name] = {key: value for key, value in entry.items() if key not in _DROP_MARKS}
    now = time.time_ns() // 1000
    for name in sorted(holding - spaces.keys()):
        spaces[name] = {"max_keys": 0, "max_value_bytes": 0, "created": now}
    return {
        **manifest,
        "endpoints": [target.endpoint(target.shard_name(i)) for i in range(count)],
        "streams": [target.stream(target.shard_name(i)) for i in range(count)],
        "namespaces": spaces,
        "retention": Retention.from_dict(manifest.get("retention")).to_dict(),
        "created": now,
        "recovered": {"from": source.root, "at": at},
    }


def _write_shard(fs: FileSystem, directory: str, entries: Entries, base_ts: int) -> int:
    """One shard's directory: a journal of `entries` from `base_ts` on, durably."""
    os.mkdir(directory, 0o700)
    count = sum(map(len, entries.values()))
    used = HEADER_SIZE + sum(
        record_size(ns, key, value) for ns, space in entries.items() for key, (value, _ts) in space.items()
    )
    size = max(mmap.PAGESIZE, -(-used // mmap.PAGESIZE) * mmap.PAGESIZE)  # the store grows it when opened
    next_path = os.path.join(directory, NEXT_NAME)
    writer = build_journal(fs, next_path, size, base_ts, _records(entries))
    try:
        fs.rename(next_path, os.path.join(directory, ACTIVE_NAME))
        fs.fsync_dir(directory)
    finally:
        writer.close()
    if writer.position != used:
        raise StorageError(f"{directory}: wrote {writer.position} bytes of journal, expected {used}", path=directory)
    return count


def _records(entries: Entries) -> Iterator[bytes]:
    for ns in sorted(entries):
        for key, (value, ts) in entries[ns].items():
            yield encode_put(ns, key, ts, _PERMANENT, value)
