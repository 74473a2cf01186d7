"""What every kvcluster actor process sets up the same way: its log file, and a SIGTERM
that stops its loop at once (the signal wakes the poll through a socket pair)."""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from kvcluster.datadir import DataDir

__all__ = ["StopSignal", "log_to_file", "pid_alive"]


def log_to_file(data_dir: str, name: str) -> None:
    """Send this process's log to DATA/logs/<name>.log (actor processes own their logging)."""
    logging.basicConfig(
        filename=DataDir.at(data_dir).log_file(name),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )


class StopSignal:
    """SIGTERM calls `stop()`, and wakes a poll loop that watches `fileno()`.

    SIGINT is ignored: a ^C in a terminal reaches the whole process group, and the
    supervisor stops the actors in order instead.
    """

    def __init__(self, stop: Callable[[], None]) -> None:
        self._reader, self._writer = socket.socketpair()
        for end in (self._reader, self._writer):
            end.setblocking(False)
        signal.set_wakeup_fd(self._writer.fileno())

        def handler(signum: int, frame: Any) -> None:
            stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def fileno(self) -> int:
        return self._reader.fileno()

    def drain(self) -> None:
        """Empty the wake-up bytes (call when `fileno()` polls readable)."""
        try:
            while self._reader.recv(64):
                pass
        except BlockingIOError:
            pass


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; we may not signal it
    return True
