"""A shard's part in a cluster snapshot: the fence, the cut, and the forked writer.

The coordinator fences every shard (writes wait; reads go on), takes as the cut T
the largest timestamp any shard has issued, and sends T back with the commits
decided at or before T that this shard has not applied yet. The shard applies
those, moves its clock past T and forks: the child writes the permanent entries of
that instant — exactly the writes with ts <= T — to a part file, while the parent
lifts the fence at once. Writes wait one coordinator round trip and a fork; the copy
runs beside the shard on copy-on-write pages (Redis's BGSAVE does the same).
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from kvcluster.codec import Request
from kvcluster.errors import InvalidRequest
from kvcluster.journal import VersionedStore
from kvcluster.snapshot import PartWriter

__all__ = ["FENCE_TIMEOUT", "PartResult", "SnapshotFence", "fork_part_writer", "read_part_result"]

FENCE_TIMEOUT: Final = 2.0  # seconds: a fence the coordinator does not follow up is lifted
_RESULT_MAX: Final = 4096  # bytes the child reports
# The part writer yields the core after every block of this many rows (~0.2 ms of work):
# a shard woken by a request then runs at once instead of waiting for the scheduler's
# next tick behind the writer (4 ms here; p99 write latency during a snapshot was 29x
# its resting value, 4x with this). Niceness or SCHED_IDLE did not help (measured).
PART_BLOCK_ROWS: Final = 256


@dataclass
class PartWriterChild:
    """A forked child writing one part; it reports through a pipe."""

    pid: int
    fd: int  # the read end of its result pipe
    envelope: Any  # who asked for the part (the coordinator)
    seq: int


@dataclass
class SnapshotFence:
    """Whether writes wait for a snapshot's cut, what waits, and the part writers running."""

    fenced: int | None = None  # the snapshot id, while writes wait
    until: float = 0.0  # monotonic deadline of the fence
    held: list[tuple[Any, Request]] = field(default_factory=list)
    writers: dict[int, PartWriterChild] = field(default_factory=dict)  # by pipe fd

    def fence(self, snapshot: int) -> None:
        if self.fenced is not None and self.fenced != snapshot:
            raise InvalidRequest(f"snapshot {self.fenced} holds the fence")
        self.fenced = snapshot
        self.until = time.monotonic() + FENCE_TIMEOUT

    def lift(self) -> list[tuple[Any, Request]]:
        """End the fence; returns the writes that waited, in arrival order."""
        held, self.held, self.fenced = self.held, [], None
        return held

    def expired(self, now: float) -> bool:
        return self.fenced is not None and now > self.until


def parse_cut(args: list[Any]) -> tuple[int, int, list[tuple[bytes, int]], str, bytes | None]:
    """SNAP_CUT's arguments, checked: id, cut, commits to apply first, part path, namespace."""
    if len(args) != 5:
        raise InvalidRequest("SNAP_CUT takes [id, cut, commits, part path, namespace]")
    snapshot, cut, commits, path, ns = args
    if type(snapshot) is not int or type(cut) is not int or cut < 0:
        raise InvalidRequest("SNAP_CUT: id and cut are integers")
    if not isinstance(commits, list) or not all(
        isinstance(c, list) and len(c) == 2 and type(c[0]) is bytes and type(c[1]) is int for c in commits
    ):
        raise InvalidRequest("SNAP_CUT: commits are [[txn, ts], ...]")
    if type(path) is not str or not os.path.isabs(path):
        raise InvalidRequest("SNAP_CUT: the part path is absolute")
    if ns is not None and type(ns) is not str:
        raise InvalidRequest("SNAP_CUT: the namespace is a string or nil")
    return snapshot, cut, [(txn, ts) for txn, ts in commits], path, None if ns is None else ns.encode()


def fork_part_writer(store: VersionedStore, path: str, ns: bytes | None) -> tuple[int, int]:
    """Fork a child that writes the store's permanent entries (of `ns`, or all) to the
    part file `path`; returns (child pid, read end of its result pipe)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write the part and leave, touching nothing else of the shard
        status = 1
        try:
            os.close(read_fd)
            store.close_inherited_lock()  # a shard restarted meanwhile must get its store
            gc.disable()  # nothing to collect, and a collection would copy every page
            writer = PartWriter(path)
            try:
                for name, entries in store.permanent_spaces(ns):
                    writer.add_space(name, entries, block_rows=PART_BLOCK_ROWS, after_block=os.sched_yield)
            except BaseException:
                writer.abandon()
                raise
            info = writer.close()
            os.write(write_fd, msgpack.packb([info.rows, info.size]))
            status = 0
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(write_fd, msgpack.packb(["error", f"{type(exc).__name__}: {exc}"[:1000]]))
        finally:
            os._exit(status)
    os.close(write_fd)
    return pid, read_fd


@dataclass(frozen=True)
class PartResult:
    rows: int
    size: int
    error: str | None = None


def read_part_result(child: PartWriterChild) -> PartResult:
    """The child finished (its pipe is readable): its report, after reaping it."""
    chunks: list[bytes] = []
    received = 0
    while received < _RESULT_MAX:
        chunk = os.read(child.fd, _RESULT_MAX)
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    os.close(child.fd)
    _pid, status = os.waitpid(child.pid, 0)
    try:
        report = msgpack.unpackb(b"".join(chunks))
    except (ValueError, msgpack.UnpackException):
        report = None
    if (
        os.waitstatus_to_exitcode(status) == 0
        and isinstance(report, list)
        and len(report) == 2
        and all(type(n) is int for n in report)
    ):
        return PartResult(report[0], report[1])
    if isinstance(report, list) and len(report) == 2 and report[0] == "error":
        return PartResult(0, 0, str(report[1]))
    return PartResult(0, 0, f"the part writer exited with status {os.waitstatus_to_exitcode(status)}")
