"""Per-process figures for `kvcluster status`: resident memory and CPU, through psutil.

`cpu_percent` is measured between two calls, so the psutil handle of each process is
kept from one status request to the next (the first request reports 0.0).
"""

from __future__ import annotations

from typing import Any

import psutil

__all__ = ["ProcessStats"]


class ProcessStats:
    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}

    def of(self, pid: int | None) -> dict[str, Any]:
        """rss_bytes, cpu_percent and cpu_seconds of `pid` (None values if it is gone)."""
        empty: dict[str, Any] = {"rss_bytes": None, "cpu_percent": None, "cpu_seconds": None}
        if pid is None:
            return empty
        process = self._processes.get(pid)
        try:
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
                process.cpu_percent(None)  # starts the measurement
            with process.oneshot():
                times = process.cpu_times()
                return {
                    "rss_bytes": process.memory_info().rss,
                    "cpu_percent": process.cpu_percent(None),
                    "cpu_seconds": times.user + times.system,
                }
        except psutil.Error:
            self._processes.pop(pid, None)
            return empty
