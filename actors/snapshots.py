"""The coordinator's side of snapshots: one consistent cut across every shard.

Phases, each with a deadline (shards do the copying; the coordinator only orders):
  fence    every shard holds its writes and reports the last timestamp it issued;
  cut      T = the largest of them (or now, if later). Decisions made from now on get timestamps above T;
           each shard applies the commits decided at or before T that it has not
           applied yet, moves its clock past T, forks a writer of its part, and
           lets its writes go on;
  assemble the parts become one file (header, blocks, footer) under a temp name,
           fsynced and renamed — on a worker thread, so the coordinator keeps serving.
The file then holds exactly the permanent writes with timestamp <= T on every shard.
One snapshot runs at a time; others queue behind it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from kvcluster.codec import Op, Reply
from kvcluster.errors import ClusterUnavailable, KVError, NamespaceNotFound, StorageError
from kvcluster.snapshot import SnapshotInfo, assemble

if TYPE_CHECKING:
    from kvcluster.actors.decisions import DecisionLog
    from kvcluster.actors.links import ShardLinks

__all__ = ["SnapshotJob", "Snapshotter"]

log = logging.getLogger("kvcluster.coordinator")

FENCE_ANSWER_TIMEOUT: Final = 1.5  # seconds for every shard to fence (under its own 2 s expiry)
PART_TIMEOUT: Final = 3600.0  # seconds a shard may take to write its part


@dataclass
class SnapshotJob:
    """One snapshot to take: where it goes (from the cut), of what, and who waits for it."""

    path: Callable[[int], str]  # the file, given the cut
    namespace: str | None
    done: Callable[[dict[str, Any] | None, KVError | None], None]
    started: float = field(default_factory=time.monotonic)
    cut: int = 0
    fence_ms: float = 0.0


class Snapshotter:
    def __init__(
        self,
        links: ShardLinks,
        shards: Callable[[], int],
        live: Callable[[], list[int]],
        decisions: DecisionLog,
        namespaces: Callable[[], dict[str, list[int]]],
        run_dir: str,
    ) -> None:
        self.links = links
        self.shards = shards
        self.live = live
        self.decisions = decisions
        self.namespaces = namespaces
        self.run_dir = run_dir
        self.queue: deque[SnapshotJob] = deque()
        self.current: SnapshotJob | None = None
        self.assembling: Future[SnapshotInfo] | None = None
        self.parts: list[str] = []
        self.taken = 0  # snapshot ids
        self._pool: ThreadPoolExecutor | None = None
        self.blocked: Callable[[], str | None] = lambda: None  # why no snapshot may start now

    def request(self, job: SnapshotJob) -> None:
        if job.namespace is not None and job.namespace not in self.namespaces():
            job.done(None, NamespaceNotFound(f"namespace {job.namespace!r} does not exist"))
            return
        self.queue.append(job)
        self._next()

    def _next(self) -> None:
        if self.current is not None or not self.queue:
            return
        job = self.current = self.queue.popleft()
        reason = self.blocked()
        shards = list(range(self.shards()))
        if reason is None and sorted(self.live()) != shards:
            reason = "a shard is down"
        if reason is not None:
            self._finish(None, ClusterUnavailable(f"cannot take a snapshot now: {reason}"))
            return
        self.taken += 1
        snapshot = self.taken
        fenced_at = time.monotonic()

        def fenced(answers: dict[int, Reply | None]) -> None:
            clocks = [r.result for r in answers.values() if r is not None and r.status == 0 and type(r.result) is int]
            if len(clocks) != len(shards):
                self.links.fan_out(shards, Op.SNAP_ABORT, [snapshot], lambda _answers: None, 1.0)
                failed = [s for s, r in answers.items() if r is None or r.status != 0]
                self._finish(None, ClusterUnavailable(f"shards {failed} did not fence for the snapshot; retry"))
                return
            job.cut = max(*clocks, time.time_ns() // 1000)  # wall-clock time where the clocks allow
            self.decisions.floor = max(self.decisions.floor, job.cut)  # later commits are newer
            self._cut(snapshot, job, shards)
            job.fence_ms = (time.monotonic() - fenced_at) * 1000

        self.links.fan_out(shards, Op.SNAP_FENCE, [snapshot], fenced, FENCE_ANSWER_TIMEOUT)

    def _cut(self, snapshot: int, job: SnapshotJob, shards: list[int]) -> None:
        self.parts = [os.path.join(self.run_dir, f"snapshot-{os.getpid()}-{snapshot}-{s}.part") for s in shards]
        pending = self.decisions.commits_at_or_before(job.cut)

        def written(answers: dict[int, Reply | None]) -> None:
            failed = {s: r for s, r in answers.items() if r is None or r.status != 0}
            if failed:
                why = "; ".join(f"shard {s}: {'no answer' if r is None else r.result}" for s, r in failed.items())
                self._finish(None, StorageError(f"the snapshot failed: {why}"))
                return
            path = job.path(job.cut)
            namespaces = self.namespaces()
            if job.namespace is not None:
                namespaces = {job.namespace: namespaces.get(job.namespace, [0, 0])}
            configs = {name: {"max_keys": mk, "max_value_bytes": mv} for name, (mk, mv) in namespaces.items()}
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="snapshot")
            self.assembling = self._pool.submit(
                assemble,
                path,
                list(self.parts),
                cut=job.cut,
                namespace=job.namespace,
                namespaces=configs,
                after_block=os.sched_yield,  # woken shards go first: write latency holds while it copies
            )

        answers: dict[int, Reply | None] = {}

        def answering(shard: int) -> Callable[[Reply | None], None]:
            def answered(reply: Reply | None) -> None:
                answers[shard] = reply
                if len(answers) == len(shards):
                    written(answers)

            return answered

        for shard, part in zip(shards, self.parts, strict=True):
            commits = [[txn, ts] for txn, ts, left in pending if shard in left]
            args = [snapshot, job.cut, commits, part, job.namespace]
            self.links.call(shard, Op.SNAP_CUT, args, answering(shard), PART_TIMEOUT)

    def tick(self) -> None:
        """Called from the coordinator's loop: finish an assembly that has completed."""
        future = self.assembling
        if future is None or not future.done():
            return
        self.assembling = None
        try:
            info = future.result()
        except KVError as exc:
            self._finish(None, exc)
        except OSError as exc:
            self._finish(None, StorageError(f"writing the snapshot: {exc}"))
        else:
            job = self.current
            seconds = 0.0 if job is None else time.monotonic() - job.started
            summary = {
                "path": info.path,
                "cut": info.cut,
                "rows": info.rows,
                "size": info.size,
                "namespace": info.namespace,
                "seconds": round(seconds, 6),
                "fence_ms": 0.0 if job is None else round(job.fence_ms, 3),
            }
            self._finish(summary, None)

    def due_in(self) -> float | None:
        return 0.02 if self.assembling is not None else None

    def _finish(self, summary: dict[str, Any] | None, error: KVError | None) -> None:
        job, self.current = self.current, None
        for part in self.parts:
            try:
                os.unlink(part)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove %s: %s", part, exc)
        self.parts = []
        if job is not None:
            if error is not None:
                log.warning("snapshot failed: %s", error)
            job.done(summary, error)
        self._next()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
