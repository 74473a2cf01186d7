"""Starting, adopting and restarting the coordinator's actors: shards and the router.

Actors are started with `multiprocess` (spawn: a fresh interpreter, its ZeroMQ context
created in the child). Each is watched through a pidfd, so a death — kill -9 included
— wakes the coordinator's poll at once, for its own children and for actors it
adopted from a coordinator that died before it. An actor that keeps dying is
restarted with a growing delay instead of in a tight loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import multiprocess
import psutil

__all__ = ["MAX_RESTART_DELAY", "ActorSlot", "restart_delay", "spawn_context"]

ConfigT = TypeVar("ConfigT")

log = logging.getLogger("kvcluster.supervision")

RESTART_DELAYS: Final = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)  # after 1st, 2nd, ... quick death
STABLE_AFTER: Final = 10.0  # seconds alive after which a shard's next death counts as the first
MAX_RESTART_DELAY: Final = RESTART_DELAYS[-1]


def restart_delay(quick_deaths: int, lived: float, cap: float = MAX_RESTART_DELAY) -> tuple[int, float]:
    """After a death `lived` seconds into a process's life: the new count of quick deaths
    in a row, and how long to wait before the restart (growing, at most `cap`)."""
    quick_deaths = 0 if lived > STABLE_AFTER else quick_deaths + 1
    return quick_deaths, min(cap, RESTART_DELAYS[min(quick_deaths, len(RESTART_DELAYS) - 1)])


def spawn_context() -> Any:
    return multiprocess.get_context("spawn")


@dataclass
class ActorSlot(Generic[ConfigT]):
    """One actor: how to start it, and the process serving it now (if any)."""

    name: str
    entry: Callable[[ConfigT], None]
    config: ConfigT
    run_dir: str
    pid: int | None = None
    pidfd: int = -1
    process: Any = None  # the multiprocess.Process when it is our child
    ready: bool = False
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    restarts: int = 0
    max_restart_delay: float = MAX_RESTART_DELAY
    info: dict[str, Any] = field(default_factory=dict)

    def pidfile(self) -> str:
        return os.path.join(self.run_dir, f"{self.name}.pid")

    def start(self) -> None:
        """Spawn a new process for this actor."""
        process = spawn_context().Process(target=self.entry, args=(self.config,), name=self.name, daemon=False)
        process.start()
        self._watch(process.pid, process)
        log.info("started %s (pid %d)", self.name, process.pid)

    def adopt(self, pid: int) -> None:
        """Watch an actor that a previous coordinator started and that still runs."""
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
        self.quick_deaths, delay = restart_delay(self.quick_deaths, lived, self.max_restart_delay)
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

    def terminate(self) -> None:
        """SIGTERM: stop gracefully."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

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
        else:  # adopted: not our child, but its pidfd turns readable when it exits
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            exited = bool(poller.poll(int(timeout * 1000)))
        if exited:
            self._close_pidfd()
            self.pid = None
        return exited

    def _close_pidfd(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
