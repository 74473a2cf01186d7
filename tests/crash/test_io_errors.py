"""I/O error loops (bar item 8): the N-th msync, fsync, rename or fallocate of a live
shard fails (N = 1, 2, ...; once, and from then on), injected by the kernel through
strace while a client writes under `always`.

Checked each time: every write ends in an acknowledgement or a `StorageError` (no
timeout, no other error); a failed journal flush makes the shard refuse every later
write instead of retrying it, and so does a failed fsync of the directory once a
rotation has switched journals (the switch may not be durable); a failed step before
the switch is retried with new files, and writes go on; reads keep answering with acknowledged values; after the
shard is restarted every acknowledged write is there and writes work again; at the end
`kvcluster verify` finds the data clean. A write answered with `StorageError` may or
may not survive (its bytes may have reached the disk before the failure): like a
timed-out write, its outcome is unknown. kvcluster never calls ftruncate (journals
are sized with fallocate), so fallocate stands in for it.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from kvtest import LONG
from kvtest.process_faults import restarted, shard_pid
from kvtest.syscall_faults import SyscallFault, require_strace
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import Cluster, Namespace, StorageError
from kvcluster.cli import main as cli

pytestmark = [pytest.mark.crash, pytest.mark.slow]

KEYS = 50  # rewritten round-robin: the live state stays small, so rotations come often
BUFFER = 16 << 10  # journal bytes: a rotation (fsync, rename, fallocate) every few hundred writes
WRITES_BEFORE_GIVING_UP = 5_000
WRITES_AFTER_FAULT = 20
NTHS = range(1, 6) if LONG else range(1, 3)
SYSCALLS = ["msync", "fsync", "rename", "fallocate"]


@dataclass
class Outcomes:
    acked: dict[str, int] = field(default_factory=dict)  # key -> last acknowledged value
    failed: dict[str, set[int]] = field(default_factory=dict)  # key -> values answered StorageError
    order: list[bool] = field(default_factory=list)  # each write in turn: acknowledged?
    read_only_from: int | None = None  # the first write refused because the shard is read-only

    def allowed(self, key: str) -> set[int]:
        """What `key` may hold: its last acknowledged value or a later failed one."""
        last = self.acked.get(key, -1)
        return {last} | {value for value in self.failed.get(key, set()) if value > last}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_strace()
    data = tmp_path_factory.mktemp("io-errors") / "data"
    running = kvcluster.start(data, shards=1, durability="always", buffer_size=BUFFER, max_restart_delay=0.25)
    yield running
    running.stop()
    result = CliRunner().invoke(cli, ["verify", str(data)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output.splitlines()[-1]


def write(namespace: Namespace, outcomes: Outcomes, value: int) -> None:
    key = f"k{value % KEYS}"
    try:
        namespace.set(key, value)
    except StorageError as exc:
        outcomes.failed.setdefault(key, set()).add(value)
        if "read-only" in str(exc) and outcomes.read_only_from is None:
            outcomes.read_only_from = len(outcomes.order)
        outcomes.order.append(False)
    else:
        outcomes.acked[key] = value
        outcomes.order.append(True)


def check_reads(namespace: Namespace, outcomes: Outcomes) -> None:
    for key in outcomes.acked:
        found = namespace.get(key)
        assert found in outcomes.allowed(key), f"{key}: {found}, expected one of {outcomes.allowed(key)}"


@pytest.mark.parametrize("persistent", [False, True], ids=["once", "persistent"])
@pytest.mark.parametrize("nth", NTHS)
@pytest.mark.parametrize("syscall", SYSCALLS)
def test_failed_syscall(cluster: Cluster, tmp_path: Path, syscall: str, nth: int, persistent: bool) -> None:
    namespace = cluster.connect(timeout=10.0).namespace("default")
    outcomes = Outcomes()
    value = 0
    write(namespace, outcomes, value)  # the shard is serving before the fault is armed
    pid = shard_pid(cluster, 0)
    assert pid is not None
    with SyscallFault(pid, syscall, nth, persistent=persistent, log=tmp_path / "strace.log") as fault:
        while not fault.fired():
            value += 1
            assert value < WRITES_BEFORE_GIVING_UP, f"{syscall} #{nth} was never called"
            write(namespace, outcomes, value)
        fired_at = len(outcomes.order)
        for _ in range(WRITES_AFTER_FAULT):
            value += 1
            write(namespace, outcomes, value)
        check_reads(namespace, outcomes)  # reads keep working, even from a shard refusing writes
    after_fault = outcomes.order[fired_at - 1 :]
    if syscall == "msync":  # a failed journal flush: that write and every later one refused
        assert not any(after_fault), f"writes acknowledged after a failed flush: {after_fault}"
        assert outcomes.read_only_from == fired_at
    if outcomes.read_only_from is not None:  # read-only stays read-only until a restart
        assert not any(outcomes.order[outcomes.read_only_from :]), after_fault
    elif not persistent:  # a failed step before a rotation's switch is retried with new files
        assert outcomes.order[-1], f"writes still refused after one failed {syscall}: {after_fault}"

    os.kill(pid, signal.SIGKILL)  # the way back from a failed flush: a restart reopens the journal
    wait_until(functools.partial(restarted, cluster, 0, pid), "the shard restarted")
    after = cluster.connect(timeout=10.0).namespace("default")
    check_reads(after, outcomes)
    value += 1
    write(after, outcomes, value)
    assert outcomes.order[-1], "writes do not work again after the restart"
