"""Timestamps: integer microseconds since the Unix epoch, strictly increasing per store."""

from __future__ import annotations

import time

__all__ = ["Clock"]


class Clock:
    """Hands out strictly increasing timestamps, whatever the wall clock does.

    Seeded on open with the largest timestamp the journal holds, so a restart after
    the system clock stepped back still moves forward.
    """

    __slots__ = ("last",)

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def observe(self, ts: int) -> None:
        if ts > self.last:
            self.last = ts

    def next(self) -> int:
        now = time.time_ns() // 1000
        last = self.last
        if now <= last:
            now = last + 1
        self.last = now
        return now
