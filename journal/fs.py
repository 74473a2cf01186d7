"""The journal's one seam to the filesystem: every call that can fail or must be durable.

Tests swap in a subclass that fails a chosen call (a failed msync, a full disk at
fallocate, a rename that never happens) to check that nothing unacknowledged is
reported done and nothing acknowledged is lost.
"""

from __future__ import annotations

import mmap
import os

__all__ = ["FileSystem"]


class FileSystem:
    """Plain POSIX calls. Every method may raise OSError; callers turn it into StorageError."""

    def create(self, path: str) -> int:
        """Open a new file for reading and writing; it must not exist yet."""
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    def open_rw(self, path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def allocate(self, fd: int, size: int) -> None:
        """Reserve real blocks for the file's first `size` bytes.

        Writing through a map into a sparse file on a full disk kills the process with
        SIGBUS; after posix_fallocate every mapped byte has a block, so ENOSPC comes
        here, as an exception.
        """
        os.posix_fallocate(fd, 0, size)

    def map(self, fd: int, size: int) -> mmap.mmap:
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def flush(self, mapped: mmap.mmap, offset: int, size: int) -> None:
        """msync(MS_SYNC) of a page-aligned range of a map."""
        mapped.flush(offset, size)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def link(self, src: str, dst: str) -> None:
        os.link(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        """Make renames, links and unlinks in `path` durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
