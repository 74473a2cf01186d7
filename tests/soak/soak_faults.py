"""The soak's faults: one every `every` seconds, drawn from a shuffled bag of the kinds (so
a short run still meets each kind), each logged with its time and how long the cluster
took to serve again.

- kill-shard: SIGKILL of a random live shard; the coordinator restarts it.
- pause-shard: SIGSTOP of a random shard for twice the clients' timeout, then SIGCONT.
- kill-coordinator: SIGKILL of the coordinator; the supervisor starts another, which
  adopts the running shards.
- snapshot: a snapshot of the whole cluster while the load goes on (the file is removed).
- rotate-journals: every shard rotates its journal now.

Before each fault the cluster must serve again (every shard answering): a fault is
meant to hit a working cluster, and one that does not recover is a failure of the soak.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
from kvtest.process_faults import paused
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import Client, KVError, Namespace
from kvcluster.router.jump import shard_for

__all__ = ["FAULT_KINDS", "Admin", "FaultRecord", "Faults"]

FAULT_KINDS = ("kill-shard", "pause-shard", "kill-coordinator", "snapshot", "rotate-journals")
RECOVERY_BOUND = 60.0  # seconds the cluster has to serve again after a fault
SNAPSHOT_TIMEOUT = 60.0
ADMIN_TIMEOUT = 10.0  # the runner's own requests (stats, rotation, probes) may wait longer than the load's


@dataclass
class FaultRecord:
    t: float  # seconds since the soak started
    kind: str
    target: str
    ok: bool = True
    recovered_s: float | None = None  # from the fault (a pause: its end) until the victim answers again
    detail: str = ""


class Admin:
    """The runner's own connection, for stats and probes: remade after an error, since a
    killed coordinator or shard leaves it with links to processes that are gone."""

    def __init__(self, data_dir: str, timeout: float) -> None:
        self.data_dir = data_dir
        self.timeout = timeout
        self._client: Client | None = None
        self._probes: list[str] = []

    def client(self) -> Client:
        if self._client is None:
            self._client = kvcluster.Client(self.data_dir, timeout=self.timeout)
        return self._client

    def reset(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    def stats(self) -> dict[str, Any] | None:
        try:
            return self.client().stats()
        except KVError:
            self.reset()
            return None

    def coordinator_pid(self) -> int | None:
        try:
            return int(self.client().ping()["pid"])
        except KVError:
            self.reset()
            return None

    def shard_pids(self) -> list[int | None] | None:
        """Each shard's pid (None while it restarts), or None if the coordinator does not answer."""
        stats = self.stats()
        if stats is None:
            return None
        return [shard["pid"] if shard.get("ready") else None for shard in stats["shards"]]

    def probe(self, shard: int, shards: int) -> bool:
        """Whether shard `shard` answers a read (of a key it owns)."""
        while len(self._probes) < shards:
            i, index = 0, len(self._probes)
            while shard_for(b"default", f"probe-{index}-{i}".encode(), shards) != index:
                i += 1
            self._probes.append(f"probe-{index}-{i}")
        try:
            # the proxy made directly: client.namespace() asks the coordinator, which asks
            # every shard, and a restarting one holds that answer for seconds
            Namespace(self.client(), "default").get(self._probes[shard])
        except KVError:
            self.reset()
            return False
        return True

    def serving(self) -> bool:
        """Every shard up and answering, and the coordinator answering."""
        pids = self.shard_pids()
        return pids is not None and None not in pids and all(self.probe(i, len(pids)) for i in range(len(pids)))

    def close(self) -> None:
        self.reset()


class Faults(threading.Thread):
    def __init__(
        self,
        data_dir: str,
        every: float,
        client_timeout: float,
        seed: int,
        started: float,
        log: Callable[[str], None],
    ) -> None:
        super().__init__(name="faults", daemon=True)
        self.admin = Admin(data_dir, max(client_timeout, ADMIN_TIMEOUT))
        self.data_dir = data_dir
        self.every = every
        self.pause = 2 * client_timeout
        self.rng = random.Random(seed)
        self.started = started
        self.log = log
        self.stop = threading.Event()
        self.records: list[FaultRecord] = []
        self.failures: list[str] = []
        self._bag: list[str] = []
        self._snapshots = 0

    def run(self) -> None:
        next_at = self.started + self.every
        # Waiting here is the fault schedule itself, not a wait for anything to happen.
        while not self.stop.wait(max(0.0, next_at - time.monotonic())):
            if not self._await_serving("before the next fault"):
                continue
            next_at = time.monotonic() + self.every
            kind = self._next_kind()
            record = FaultRecord(round(time.monotonic() - self.started, 1), kind, "")
            try:
                getattr(self, "_" + kind.replace("-", "_"))(record)
            except Exception:
                record.ok = False
                record.detail = traceback.format_exc(limit=3)
            if not record.ok:
                self.failures.append(f"{kind} at {record.t} s: {record.detail}")
            self.records.append(record)
            recovered = "" if record.recovered_s is None else f", answering again after {record.recovered_s:.2f} s"
            status = "" if record.ok else " FAILED"
            self.log(f"[{record.t:8.1f} s] {kind:<16} {record.target}{recovered}{status} {record.detail}".rstrip())
        self.admin.close()

    def _next_kind(self) -> str:
        if not self._bag:
            self._bag = list(FAULT_KINDS)
            self.rng.shuffle(self._bag)
        return self._bag.pop()

    def _await_serving(self, when: str, record: FaultRecord | None = None) -> bool:
        """Wait until the cluster serves (or the soak stops). If it does not, the failure
        goes in `record`, or in the soak's failures when there is none."""
        try:
            wait_until(lambda: self.stop.is_set() or self.admin.serving(), "the cluster serving", RECOVERY_BOUND)
        except AssertionError:
            problem = f"the cluster did not serve again within {RECOVERY_BOUND:.0f} s {when}"
            if record is None:
                self.failures.append(problem)
                self.log(f"[{time.monotonic() - self.started:8.1f} s] {problem}")
            else:
                record.ok, record.detail = False, problem
            return False
        return True

    def _live_shard(self, record: FaultRecord) -> tuple[int, int]:
        pids = self.admin.shard_pids() or []
        live = [(i, pid) for i, pid in enumerate(pids) if pid is not None]
        if not live:
            raise RuntimeError("no live shard to pick")
        index, pid = self.rng.choice(live)
        record.target = f"shard-{index} (pid {pid})"
        return index, pid

    def _kill_shard(self, record: FaultRecord) -> None:
        index, pid = self._live_shard(record)
        os.kill(pid, signal.SIGKILL)
        since = time.monotonic()
        wait_until(lambda: _gone(pid), "the killed shard gone", RECOVERY_BOUND)
        self._answers(record, index, since)

        def replaced() -> bool:  # the coordinator lists the new process
            pids = self.admin.shard_pids()
            return pids is not None and pids[index] not in (None, pid)

        wait_until(replaced, "the killed shard replaced", RECOVERY_BOUND)
        if record.ok:
            self._await_serving(f"after {record.kind}", record)

    def _pause_shard(self, record: FaultRecord) -> None:
        index, pid = self._live_shard(record)
        with paused(pid):
            self.stop.wait(self.pause)  # the fault's length: paused past every client's timeout
        record.target += f" for {self.pause:g} s"
        self._answers(record, index, time.monotonic())
        if record.ok:
            self._await_serving(f"after {record.kind}", record)

    def _answers(self, record: FaultRecord, index: int, since: float) -> None:
        """Time from `since` until shard `index` answers a client's read again."""
        shards = len(self.admin.shard_pids() or [None] * (index + 1))
        try:
            wait_until(
                lambda: self.stop.is_set() or self.admin.probe(index, shards), "the shard answering", RECOVERY_BOUND
            )
        except AssertionError:
            record.ok, record.detail = False, f"shard-{index} did not answer within {RECOVERY_BOUND:.0f} s"
            return
        record.recovered_s = time.monotonic() - since

    def _kill_coordinator(self, record: FaultRecord) -> None:
        pid = self.admin.coordinator_pid()
        if pid is None:
            raise RuntimeError("the coordinator did not answer")
        record.target = f"pid {pid}"
        os.kill(pid, signal.SIGKILL)
        since = time.monotonic()
        wait_until(lambda: self.admin.coordinator_pid() not in (None, pid), "a new coordinator", RECOVERY_BOUND)
        record.recovered_s = time.monotonic() - since
        self._await_serving(f"after {record.kind}", record)

    def _snapshot(self, record: FaultRecord) -> None:
        folder = os.path.join(self.data_dir, "soak-snapshots")
        os.makedirs(folder, exist_ok=True)
        self._snapshots += 1
        path = os.path.join(folder, f"snapshot-{self._snapshots}.kvs")
        try:
            summary = self.admin.client().save_snapshot(path, timeout=SNAPSHOT_TIMEOUT)
        except KVError as exc:
            self.admin.reset()
            record.ok, record.detail = False, f"{type(exc).__name__}: {exc}"
            return
        finally:
            if os.path.exists(path):
                os.unlink(path)
        record.target = f"{summary['rows']} rows, fence {summary['fence_ms']:.1f} ms, {summary['seconds']:.2f} s"

    def _rotate_journals(self, record: FaultRecord) -> None:
        started = time.monotonic()
        try:
            self.admin.client().rotate_journals()
        except KVError as exc:
            self.admin.reset()
            record.ok, record.detail = False, f"{type(exc).__name__}: {exc}"
            return
        record.target = f"every shard, {time.monotonic() - started:.2f} s"


def _gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie not yet reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
