"""Starting, adopting and restarting shard processes.

Shards are started with `multiprocess` (spawn: a fresh interpreter, its ZeroMQ context
created in the child). Each is watched through a pidfd, so a death — kill -9 included
— wakes the coordinator's poll at once, for its own children and for shards it
adopted from a coordinator that died before it. A shard that keeps dying is
restarted with a growing delay instead of in a tight loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Final

import multiprocess
import psutil

from kvcluster.actors.shard import ShardConfig, run_shard
from kvcluster.datadir import DataDir

__all__ = ["ShardSlot", "spawn_context"]

log = logging.getLogger("kvcluster.supervision")

RESTART_DELAYS: Final = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)  # after 1st, 2nd, ... quick death
STABLE_AFTER: Final = 10.0  # seconds alive after which a shard's next death counts as the first


def spawn_context() -> Any:
    return multiprocess.get_context("spawn")


@dataclass
class ShardSlot:
    """One shard: its configuration, and the process serving it now (if any)."""

    config: ShardConfig
    pid: int | None = None
    pidfd: int = -1
    process: Any = None  # the multiprocess.Process when it is our child
    ready: bool = False
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    restarts: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return DataDir.at(self.config.data_dir).shard_name(self.config.shard)

    def pidfile(self) -> str:
        return os.path.join(DataDir.at(self.config.data_dir).run, f"{self.name}.pid")

    def start(self) -> None:
        """Spawn a new shard process."""
        process = spawn_context().Process(target=run_shard, args=(self.config,), name=self.name, daemon=False)
        process.start()
        self._watch(process.pid, process)
        log.info("started %s (pid %d)", self.name, process.pid)

    def adopt(self, pid: int) -> None:
        """Watch a shard that a previous coordinator started and that still serves."""
        self._watch(pid, None)
        log.info("adopted %s (pid %d)", self.name, pid)

    def _watch(self, pid: int, process: Any) -> None:
        self.pid, self.process = pid, process
        self.pidfd = os.pidfd_open(pid)
        self.started_at = time.monotonic()
        self.ready = False
        self.restart_at = None
        with open(self.pidfile(), "w", encoding="ascii") as f:
            f.write(f"{pid}\n")

    def recorded_pid(self) -> int | None:
        """The pid a previous coordinator recorded, if that process still exists."""
        try:
            with open(self.pidfile(), encoding="ascii") as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid > 0 and psutil.pid_exists(pid) else None

    def died(self) -> None:
        """Its pidfd fired: reap it and schedule the restart."""
        exit_code: Any = None
        if self.process is not None:
            self.process.join(0)
            exit_code = self.process.exitcode
        self._close_pidfd()
        lived = time.monotonic() - self.started_at
        self.quick_deaths = 0 if lived > STABLE_AFTER else self.quick_deaths + 1
        delay = RESTART_DELAYS[min(self.quick_deaths, len(RESTART_DELAYS) - 1)]
        self.restart_at = time.monotonic() + delay
        self.restarts += 1
        log.warning(
            "%s (pid %s) died (exit %s) after %.1f s; restarting in %.2f s",
            self.name,
            self.pid,
            exit_code,
            lived,
            delay,
        )
        self.pid, self.process, self.ready = None, None, False

    def kill(self) -> None:
        """SIGKILL the process (the last resort of a stop, or a shard that does not answer)."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> bool:
        """Wait for the process to exit; True if it did."""
        if self.pid is None:
            return True
        if self.process is not None:
            self.process.join(timeout)
            exited = self.process.exitcode is not None
        else:
            try:
                psutil.Process(self.pid).wait(timeout)
                exited = True
            except psutil.TimeoutExpired:
                exited = False
            except psutil.NoSuchProcess:
                exited = True
        if exited:
            self._close_pidfd()
            self.pid = None
        return exited

    def _close_pidfd(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
