"""A tour of kvcluster's journal on its own: `VersionedStore` and point-in-time recovery.

Run with `./scripts/run` (or `python examples/journal_tour.py [DIR]`). It writes into
DIR (default ./kvcluster-data/tour), reopens the store as a crash would, rotates the
journal, recovers an earlier moment, and verifies every file.
"""

from __future__ import annotations

import os
import sys

from kvcluster import Scope
from kvcluster.journal import VersionedStore, earliest_recoverable, recover_at
from kvcluster.journal.verify import verify_tree


def main(directory: str) -> None:
    with VersionedStore.open(directory, buffer_size=64 << 10, durability="interval") as store:
        first = store.set("users", "u:1", {"name": "Alice", "visits": 1})
        store.set("users", "session:1", b"token", scope=Scope.EPHEMERAL)
        second = store.set("users", "u:1", {"name": "Alice", "visits": 2})
        print(f"set u:1 twice, at {first} and {second}")
        print("now:", store.get("users", "u:1"))
        for i in range(3000):  # enough to pass the high-water mark and rotate a few times
            store.set("events", f"e:{i % 500}", {"n": i})
        store.rotate()
        print(f"{store.stats()['rotations']} rotations, {store.stats()['archives']} archives kept")

    with VersionedStore.open(directory, buffer_size=64 << 10) as store:
        print("after reopen:", store.get("users", "u:1"), "| ephemeral session:", store.get("users", "session:1"))

    at_first = recover_at(directory, first)
    print(f"state at {first}:", at_first[("users", "u:1")])
    print("history reaches back to", earliest_recoverable(directory) or "the first write")
    reports = verify_tree(directory)
    print(f"verify: {sum(r.ok for r in reports)}/{len(reports)} files valid")


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join("kvcluster-data", "tour")
    main(target)
