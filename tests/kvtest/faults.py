"""Fault injection through the journal's filesystem seam, and byte surgery on files."""

from __future__ import annotations

import errno
import mmap
import os
from collections import Counter

from kvcluster.journal.fs import FileSystem

__all__ = ["CountingFS", "FaultyFS", "flip_bit", "truncate", "zero_range"]


class CountingFS(FileSystem):
    """The real filesystem, counting each call by name."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def flush(self, mapped: mmap.mmap, offset: int, size: int) -> None:
        self.calls["flush"] += 1
        super().flush(mapped, offset, size)

    def fsync(self, fd: int) -> None:
        self.calls["fsync"] += 1
        super().fsync(fd)

    def fsync_dir(self, path: str) -> None:
        self.calls["fsync_dir"] += 1
        super().fsync_dir(path)


class FaultyFS(FileSystem):
    """The real filesystem, except that the N-th call of a chosen kind fails.

    `fail={"flush": 3}` makes the third flush raise EIO; with `persistent=True` every
    call from the N-th on fails, like a disk that went bad and stays bad.
    """

    def __init__(self, fail: dict[str, int], *, persistent: bool = False, error: int = errno.EIO) -> None:
        self.fail = fail
        self.persistent = persistent
        self.error = error
        self.calls: Counter[str] = Counter()

    def _check(self, op: str) -> None:
        self.calls[op] += 1
        nth = self.fail.get(op)
        if nth and (self.calls[op] == nth or (self.persistent and self.calls[op] > nth)):
            raise OSError(self.error, f"injected {op} failure #{self.calls[op]}")

    def create(self, path: str) -> int:
        self._check("create")
        return super().create(path)

    def allocate(self, fd: int, size: int) -> None:
        self._check("allocate")
        super().allocate(fd, size)

    def flush(self, mapped: mmap.mmap, offset: int, size: int) -> None:
        self._check("flush")
        super().flush(mapped, offset, size)

    def fsync(self, fd: int) -> None:
        self._check("fsync")
        super().fsync(fd)

    def rename(self, src: str, dst: str) -> None:
        self._check("rename")
        super().rename(src, dst)

    def link(self, src: str, dst: str) -> None:
        self._check("link")
        super().link(src, dst)

    def unlink(self, path: str) -> None:
        self._check("unlink")
        super().unlink(path)

    def fsync_dir(self, path: str) -> None:
        self._check("fsync_dir")
        super().fsync_dir(path)


def flip_bit(path: str, offset: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def truncate(path: str, size: int) -> None:
    os.truncate(path, size)


def zero_range(path: str, start: int, stop: int) -> None:
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(bytes(stop - start))
