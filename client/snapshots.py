"""Loading a snapshot into a running cluster, as one plan both clients drive.

The whole file is verified first (a damaged or foreign file is refused before the
cluster is touched); then its namespaces are created where missing, and its rows are
written in batches, each shard's part of a batch in one message. The keys get new
timestamps — a load is a write, so point-in-time recovery sees them from the moment
they were loaded — and keys not in the file are left alone. A load is not atomic: if
it stops midway, what was loaded stays, and loading again gives the same result.

While it runs, the client holds a lease on the file at the coordinator, so autosave
neither fires nor writes over it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Generator, Iterator
from typing import Any, Final

from kvcluster.batch import BatchMode
from kvcluster.client.batches import Step, set_many_packed
from kvcluster.client.core import Call, ClientCore
from kvcluster.codec import Op
from kvcluster.errors import KVError, NamespaceExists
from kvcluster.scope import Scope
from kvcluster.snapshot import Row, open_snapshot, verify_snapshot

__all__ = ["LOAD_CHUNK", "SAVE_TIMEOUT", "load_snapshot", "save_call"]

LOAD_CHUNK: Final = 2000  # rows per batch
LOAD_LEASE: Final = 60.0  # seconds; renewed well before it runs out
RENEW_EVERY: Final = 10.0
SAVE_TIMEOUT: Final = 600.0  # seconds a snapshot may take, unless the caller says otherwise

Loader = Generator[Step, list[Any], dict[str, Any]]


def save_call(core: ClientCore, path: str | os.PathLike[str], namespace: str | None, timeout: float) -> Call:
    """The coordinator writes the file: the path is made absolute here, where it was named."""
    call = core.admin(Op.SNAPSHOT, os.path.abspath(os.fspath(path)), namespace)
    call.timeout = timeout
    return call


def _one(core: ClientCore, op: Op, *args: Any, timeout: float | None = None) -> Generator[Step, list[Any], Any]:
    call = core.admin(op, *args)
    call.timeout = timeout
    (result,) = yield [call]
    if isinstance(result, KVError):
        raise result
    return result


def load_snapshot(core: ClientCore, path: str | os.PathLike[str], timeout: float, chunk: int = LOAD_CHUNK) -> Loader:
    started = time.monotonic()
    path = os.path.abspath(os.fspath(path))
    info = verify_snapshot(path)
    yield from _one(core, Op.LOADING, path, LOAD_LEASE)
    loaded = failed = 0
    try:
        existing = set((yield from _one(core, Op.NS_LIST)))
        for name, config in info.namespaces.items():
            if name not in existing:
                with contextlib.suppress(NamespaceExists):  # created meanwhile by someone else
                    yield from _one(core, Op.NS_CREATE, name, config["max_keys"], config["max_value_bytes"])
        renew = time.monotonic() + RENEW_EVERY
        with open_snapshot(path) as reader:
            for ns, rows in _chunks(iter(reader), chunk):
                keys = [key.decode() for _ns, key, _value, _ts in rows]
                packed = [value for _ns, _key, value, _ts in rows]
                plan = set_many_packed(core, ns, keys, packed, BatchMode.BEST_EFFORT, Scope.PERMANENT, timeout)
                result = yield from plan
                loaded += result.processed
                failed += len(result.errors or {})
                if time.monotonic() >= renew:
                    renew = time.monotonic() + RENEW_EVERY
                    yield from _one(core, Op.LOADING, path, LOAD_LEASE)
    except Exception:
        with contextlib.suppress(KVError):
            yield from _one(core, Op.LOADING, path, 0)  # autosave need not wait for the lease
        raise
    yield from _one(core, Op.LOADING, path, 0)
    return {
        "path": path,
        "cut": info.cut,
        "rows": info.rows,
        "loaded": loaded,
        "failed": failed,
        "namespaces": sorted(info.namespaces),
        "seconds": round(time.monotonic() - started, 6),
    }


def _chunks(rows: Iterator[Row], size: int) -> Iterator[tuple[bytes, list[Row]]]:
    """Consecutive rows of one namespace, at most `size` at a time."""
    current: list[Row] = []
    ns = b""
    for row in rows:
        if current and (row[0] != ns or len(current) >= size):
            yield ns, current
            current = []
        ns = row[0]
        current.append(row)
    if current:
        yield ns, current
