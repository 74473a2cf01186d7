"""Fill a small filesystem under a store, in a child process so a SIGBUS would show.

    python -m kvtest.full_disk_child DIR

Prints one line of JSON: how many writes were acknowledged before the disk filled,
the error, whether reads still worked, and whether writes resumed once space was freed.
"""

from __future__ import annotations

import json
import os
import sys

from kvcluster import StorageError
from kvcluster.journal import VersionedStore


def main(directory: str) -> None:
    store_dir = os.path.join(directory, "store")
    store = VersionedStore.open(store_dir, buffer_size=64 << 10, durability="always")
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    filler = os.path.join(directory, "filler")
    with open(filler, "wb") as f:
        f.write(b"\xaa" * max(0, free - (400 << 10)))  # leave about 400 KiB
    acked: dict[str, int] = {}
    error = ""
    for i in range(1_000_000):
        try:
            acked[f"k{i}"] = store.set("ns", f"k{i}", "v" * 200)
        except StorageError as exc:
            error = str(exc)
            break
    reads_ok = all(store.get("ns", key) is not None and store.get("ns", key)[1] == ts for key, ts in acked.items())  # type: ignore[index]
    refused_again = False
    try:
        store.set("ns", "again", "v" * 200)
    except StorageError:
        refused_again = True
    os.unlink(filler)
    resumed = store.set("ns", "after", "space freed")
    store.close()
    with VersionedStore.open(store_dir, buffer_size=64 << 10) as reopened:
        survived = all(reopened.get("ns", key) is not None for key in acked)
        after = reopened.get("ns", "after") == ("space freed", resumed)
    print(json.dumps({
        "acked": len(acked), "error": error, "reads_ok": reads_ok, "refused_again": refused_again,
        "survived": survived, "after": after,
    }))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
