"""A `zmq.Poller` with a cheap way to wait a few microseconds for the next request.

After a shard replies, the next request from the same client usually comes within
tens of microseconds, and waking a sleeping process costs more than that on a VM, so
the shard keeps polling for a while (see `SPIN` in shard.py). `zmq_poll` costs ~3 µs a
call here (it asks every ZeroMQ socket for its events); an epoll over the same file
descriptors costs ~0.5 µs. `spin()` polls that epoll, and hands back the stream
connections that became readable, which is all a shard needs to serve them.

The epoll sees a ZeroMQ socket only through its ZMQ_FD, which signals changes rather
than readiness: a message can be queued with the descriptor quiet. So `spin()` never
claims that nothing is ready — it ends after its time either way, and the caller's
next full `poll()` sees every socket's real state. A ZeroMQ message waits at most one
spin (and `FULL_POLL_EVERY` while stream requests keep coming) before it is seen.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from typing import Any, Final

import zmq

__all__ = ["FULL_POLL_EVERY", "SpinPoller"]

FULL_POLL_EVERY: Final = 0.001  # seconds of spin-served requests before zmq_poll runs anyway
_POLLIN: Final = int(zmq.POLLIN)


class SpinPoller(zmq.Poller):
    """`zmq.Poller`'s register/unregister/poll, plus `spin()`."""

    def __init__(self) -> None:
        super().__init__()
        self._epoll = select.epoll()
        self._fds: dict[int, Any] = {}  # fd in the epoll -> the item registered
        self.last_full_poll = 0.0

    def register(self, socket: Any, flags: int = _POLLIN) -> None:
        super().register(socket, flags)
        fd = _fd_of(socket)
        if fd not in self._fds:
            self._fds[fd] = socket
            self._epoll.register(fd, select.EPOLLIN)  # spin() looks for input only

    def unregister(self, socket: Any) -> None:
        super().unregister(socket)
        fd = _fd_of(socket)
        if self._fds.pop(fd, None) is not None:
            with contextlib.suppress(OSError):  # already closed: the kernel dropped it
                self._epoll.unregister(fd)

    def poll(self, timeout: int | None = None) -> list[tuple[Any, int]]:
        self.last_full_poll = time.monotonic()
        return super().poll(timeout)

    def spin(self, seconds: float, streams: dict[int, Any]) -> list[tuple[Any, int]] | None:
        """Poll cheaply for up to `seconds`, yielding the core between polls. Returns the
        ready stream connections (as `poll()` would list them) when only those are
        ready; None when the time ran out or something else stirred: then the caller
        runs a full `poll()`."""
        if time.monotonic() - self.last_full_poll >= FULL_POLL_EVERY:
            return None
        deadline = time.perf_counter() + seconds
        epoll = self._epoll.poll
        while True:
            events = epoll(0)
            if events:
                ready: list[tuple[Any, int]] = []
                for fd, _mask in events:
                    if fd not in streams:
                        return None
                    ready.append((fd, _POLLIN))
                return ready
            if time.perf_counter() >= deadline:
                return None
            os.sched_yield()

    def close(self) -> None:
        self._epoll.close()


def _fd_of(item: Any) -> int:
    if isinstance(item, int):
        return item
    if isinstance(item, zmq.Socket):
        return int(item.getsockopt(zmq.FD))
    return int(item.fileno())
