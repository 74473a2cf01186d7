"""The figures of `kvcluster status`: per-process memory and CPU through psutil, and the
status object itself (the shape DESIGN.md fixes; more fields may follow).

`cpu_percent` is measured between two calls, so the psutil handle of each process is
kept from one status request to the next (the first request reports 0.0).
"""

from __future__ import annotations

import os
from typing import Any

import psutil

__all__ = ["ProcessStats", "status_object"]


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


def status_object(
    processes: ProcessStats,
    shards: list[dict[str, Any]],
    shard_info: dict[int, dict[str, Any]],
    namespaces: dict[str, list[int]],
) -> dict[str, Any]:
    """Combine the coordinator's view of its shards with what each shard reported."""
    totals: dict[str, int] = {}
    for shard in shards:
        info = shard_info.get(shard["id"], {})
        for ns, count in info.get("namespaces", {}).items():
            totals[ns] = totals.get(ns, 0) + count
        shard.update(
            keys=info.get("keys"),
            journal_bytes=info.get("journal_bytes"),
            ops_total=info.get("ops_total"),
            transactions_prepared=info.get("transactions_prepared"),
            requests_waiting=info.get("requests_waiting"),
            **processes.of(shard["pid"]),
        )
    return {
        "coordinator": {"pid": os.getpid(), **processes.of(os.getpid())},
        "shards": shards,
        "namespaces": sorted(namespaces),
        "namespace_stats": {
            name: {"keys": totals.get(name, 0), "max_keys": max_keys, "max_value_bytes": max_value}
            for name, (max_keys, max_value) in namespaces.items()
        },
    }
