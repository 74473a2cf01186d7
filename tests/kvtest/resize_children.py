"""Children that load a cluster while it is resized.

    python -m kvtest.resize_children writer DATA NAMESPACE STOPFILE
    python -m kvtest.resize_children reader DATA NAMESPACE STOPFILE COUNT

The writer sets `w-<i>` one after another and prints `<key> <ts>` for each
acknowledged write (timeouts: `<key> ?`). The reader reads `k-0 .. k-<COUNT-1>`
(written before it started) round and round and prints one JSON line at the end:
reads made, misses (a key read as absent) and errors. Both stop when STOPFILE exists.
"""

from __future__ import annotations

import json
import os
import sys

import kvcluster
from kvcluster import KVError, Timeout


def writer(data: str, name: str, stop: str) -> None:
    namespace = kvcluster.connect(data, timeout=20.0).namespace(name)
    print("ready", flush=True)
    i = 0
    while not os.path.exists(stop):
        key = f"w-{i}"
        try:
            print(key, namespace.set(key, i), flush=True)
        except Timeout:
            print(key, "?", flush=True)
        except KVError as exc:
            print(key, "!", type(exc).__name__, str(exc).replace("\n", " "), flush=True)
        i += 1


def reader(data: str, name: str, stop: str, count: int) -> None:
    namespace = kvcluster.connect(data, timeout=20.0).namespace(name)
    print("ready", flush=True)
    reads = misses = 0
    errors: list[str] = []
    i = 0
    while not os.path.exists(stop):
        key = f"k-{i % count}"
        try:
            if namespace.get_versioned(key) is None:
                misses += 1
        except KVError as exc:
            errors.append(f"{key}: {type(exc).__name__}: {exc}")
        reads += 1
        i += 1
    print(json.dumps({"reads": reads, "misses": misses, "errors": errors[:10]}), flush=True)


if __name__ == "__main__":
    kind, data, name, stop = sys.argv[1:5]
    if kind == "writer":
        writer(data, name, stop)
    else:
        reader(data, name, stop, int(sys.argv[5]))
