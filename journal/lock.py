"""One owner per store directory: an exclusive flock on DIR/LOCK, released when the
owner closes the store or dies (kill -9 included), so a crash never leaves it stuck."""

from __future__ import annotations

import fcntl
import os

from kvcluster.errors import StorageError
from kvcluster.journal.writer import storage_error

__all__ = ["LOCK_NAME", "lock_directory"]

LOCK_NAME = "LOCK"


def lock_directory(directory: str) -> int:
    """Take the directory's lock and return its fd (close it to release).

    Raises StorageError if another open store holds it: two writers would corrupt
    the journal.
    """
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise storage_error(exc, "opening", path) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageError(f"{directory} is open in another process (lock held on {path})", path=path) from None
    return fd
