"""The cluster's root process: it holds the pid lock and keeps the coordinator alive.

    python -m kvcluster.actors.supervisor '<config as JSON>'

It is started as a fresh interpreter (not forked from, nor importing, the program
that asked for the cluster), so a user's script needs no `__main__` guard. It is a
child subreaper: shards orphaned by a coordinator that died are re-parented here
and reaped here, while the restarted coordinator adopts them. Embedded clusters set
`watch_parent`, so the cluster stops when the program that started it is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Final

from kvcluster.actors.coordinator import CoordinatorConfig, run_coordinator
from kvcluster.actors.supervision import restart_delay, spawn_context
from kvcluster.datadir import DataDir, PidLock
from kvcluster.process import pid_alive

__all__ = ["SupervisorConfig", "main", "run_supervisor"]

log = logging.getLogger("kvcluster.supervisor")

_PR_SET_CHILD_SUBREAPER: Final = 36
STOP_TIMEOUT: Final = 20.0  # seconds the coordinator has to stop its shards and exit


@dataclass(frozen=True)
class SupervisorConfig:
    coordinator: CoordinatorConfig
    watch_parent: int = 0  # pid whose exit stops the cluster (0: run until told to stop)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SupervisorConfig:
        data = json.loads(text)
        return cls(CoordinatorConfig(**data["coordinator"]), int(data.get("watch_parent", 0)))


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("cannot become a child subreaper (errno %d)", ctypes.get_errno())


class Supervisor:
    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self.stop_requested = False
        self.coordinator: Any = None
        self.quick_deaths = 0
        self.started_at = 0.0

    def run(self) -> None:
        self._start_coordinator()
        while True:
            self.coordinator.join(0.2)
            self._reap_orphans()
            if self.config.watch_parent and not pid_alive(self.config.watch_parent):
                log.info("the program that started the cluster is gone; stopping")
                self.stop_requested = True
            if self.stop_requested:
                self._stop()
                return
            if self.coordinator.exitcode is not None:
                self._restart_coordinator()

    def _start_coordinator(self) -> None:
        self.coordinator = spawn_context().Process(
            target=run_coordinator, args=(self.config.coordinator,), name="coordinator", daemon=False
        )
        self.coordinator.start()
        self.started_at = time.monotonic()
        log.info("started the coordinator (pid %d)", self.coordinator.pid)

    def _restart_coordinator(self) -> None:
        lived = time.monotonic() - self.started_at
        self.quick_deaths, delay = restart_delay(self.quick_deaths, lived, self.config.coordinator.max_restart_delay)
        log.warning(
            "the coordinator died (exit %s) after %.1f s; restarting in %.2f s", self.coordinator.exitcode, lived, delay
        )
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self.stop_requested:
            self._reap_orphans()
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        if not self.stop_requested:
            self._start_coordinator()

    def _reap_orphans(self) -> None:
        """Reap exited processes re-parented here, leaving the coordinator to its Process."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            if self.coordinator is not None and info.si_pid == self.coordinator.pid:
                return  # the coordinator's Process object reaps it (join)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.si_pid, 0)

    def _stop(self) -> None:
        """SIGTERM the coordinator (it stops its shards), wait, then kill what is left."""
        if self.coordinator.exitcode is None:
            self.coordinator.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT
            while self.coordinator.exitcode is None and time.monotonic() < deadline:
                self.coordinator.join(0.05)
                self._reap_orphans()  # adopted shards exit as our children now
        if self.coordinator.exitcode is None:
            log.warning("the coordinator did not stop in %.0f s; killing the process group", STOP_TIMEOUT)
            self.coordinator.kill()
            self.coordinator.join(5)
        self._kill_leftovers()
        log.info("cluster stopped")

    def _kill_leftovers(self) -> None:
        """Shards (and the router, the gateway) left behind by a coordinator that was killed:
        they are our children now."""
        run = DataDir.at(self.config.coordinator.data_dir).run
        leftovers = []
        for name in os.listdir(run):
            if (name.startswith("shard-") and name.endswith(".pid")) or name in ("router.pid", "resp.pid"):
                with contextlib.suppress(OSError, ValueError), open(os.path.join(run, name), encoding="ascii") as f:
                    pid = int(f.read().strip())
                    if _is_child(pid):
                        os.kill(pid, signal.SIGTERM)
                        leftovers.append(pid)
        deadline = time.monotonic() + 10
        while leftovers and time.monotonic() < deadline:
            self._reap_orphans()
            leftovers = [pid for pid in leftovers if _is_child(pid)]
            time.sleep(0.05)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _is_child(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return int(fields[1]) == os.getpid()


def run_supervisor(config: SupervisorConfig) -> None:
    data = DataDir.at(config.coordinator.data_dir)
    data.prepare()
    logging.basicConfig(
        filename=data.log_file("supervisor"),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    lock = PidLock(data.pidfile)
    lock.acquire()
    _become_subreaper()
    supervisor = Supervisor(config)

    def stop(signum: int, frame: Any) -> None:
        supervisor.stop_requested = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        supervisor.run()
    finally:
        lock.release()


def main() -> None:
    run_supervisor(SupervisorConfig.from_json(sys.argv[1]))


if __name__ == "__main__":
    main()
