"""Writers whose history can be checked after crashes: each state a shard recovers
must be a gap-free prefix of what was written to it."""

from __future__ import annotations

import threading

from kvcluster import Cluster, KVError

__all__ = ["KEYS_PER_WRITER", "KeyedWriter", "prefix_violations"]

KEYS_PER_WRITER = 500


class KeyedWriter(threading.Thread):
    """Rewrites its own KEYS_PER_WRITER keys round-robin (write i sets key i % KEYS with
    value i), one request at a time, keeping every write's outcome in order."""

    def __init__(self, cluster: Cluster, prefix: str) -> None:
        super().__init__(daemon=True)
        self.namespace = cluster.connect(timeout=2.0).namespace("default")
        self.prefix = prefix
        self.outcomes: list[bool | None] = []  # write i: True acknowledged, None unknown
        self.stop = threading.Event()

    def key(self, i: int) -> str:
        return f"{self.prefix}-{i % KEYS_PER_WRITER}"

    def keys(self) -> list[str]:
        return [self.key(i) for i in range(KEYS_PER_WRITER)]

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                assert self.namespace.set(self.key(i), i) > 0
            except KVError:  # timed out, lost its connection, or found no shard: unknown
                self.outcomes.append(None)
            else:
                self.outcomes.append(True)
            i += 1


def prefix_violations(writer: KeyedWriter, found: dict[str, int | None], shard_of: dict[str, int]) -> list[str]:
    """Where a shard's state is not a gap-free prefix of this writer's writes to it.

    Per shard, the cut is the newest write whose value is visible. The state must be
    what applying the writes up to the cut gives, where only writes of unknown outcome
    may be missing: each key holds its newest write before the cut that was acknowledged
    or a later unknown one; and no acknowledged write lies beyond the cut (it was lost).
    """
    problems: list[str] = []
    cut: dict[int, int] = {}
    for key, value in found.items():
        if value is not None:
            if writer.key(value) != key or value >= len(writer.outcomes):
                problems.append(f"{key} holds {value}, never written to it")
                continue
            cut[shard_of[key]] = max(cut.get(shard_of[key], -1), value)
    for i, outcome in enumerate(writer.outcomes):
        key = writer.key(i)
        if outcome and i > cut.get(shard_of[key], -1):
            problems.append(f"acknowledged write {i} ({key}) is beyond its shard's cut: lost")
    for key, value in found.items():
        limit = cut.get(shard_of[key], -1)
        writes = range(int(key.rsplit("-", 1)[1]), limit + 1, KEYS_PER_WRITER)
        newest_acked = max((i for i in writes if writer.outcomes[i]), default=None)
        if value is None:
            if newest_acked is not None:
                problems.append(f"{key} is missing; write {newest_acked} was acknowledged")
        elif newest_acked is not None and value < newest_acked:
            problems.append(f"{key} holds {value}, older than acknowledged write {newest_acked}")
        elif value != newest_acked and writer.outcomes[value] is not None:
            problems.append(f"{key} holds {value}, which was acknowledged but then overwritten")
    return problems
