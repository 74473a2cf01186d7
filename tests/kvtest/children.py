"""Start writer children, kill them with SIGKILL, and check what survived against a model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvcluster import Scope
from kvcluster.journal import VersionedStore
from kvtest.writer_child import operations

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

State = dict[str, tuple[Any, int]]


@dataclass
class ChildRun:
    """What one writer child acknowledged before it died."""

    acked: list[tuple[int, int | None]] = field(default_factory=list)  # (op index, ts)
    durable: int = 0  # bytes of the active journal on disk at the last ack
    returncode: int | None = None
    stderr: str = ""


def run_writer(
    directory: str,
    seed: int,
    *,
    kill_after: int | None = None,
    durability: str = "none",
    buffer: int = 1 << 16,
    env: Mapping[str, str] | None = None,
    limit: int | None = None,
    timeout: float = 60.0,
    pause: float = 0.0,
) -> ChildRun:
    """Run a writer child; SIGKILL it once `kill_after` acks arrived (None: let it run)."""
    command = [sys.executable, "-m", "kvtest.writer_child", directory, str(seed), "--durability", durability]
    command += ["--buffer", str(buffer)]
    if limit is not None:
        command += ["--limit", str(limit)]
    if pause:
        command += ["--pause", str(pause)]
    child_env = dict(os.environ, PYTHONPATH=TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child_env.update(env or {})
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env, text=True, bufsize=1
    )
    run = ChildRun()
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = proc.stdout.readline()
        if first != "ready\n":
            proc.wait(timeout)
            raise RuntimeError(f"writer child failed to start: {first!r} {proc.stderr.read()}")
        for line in proc.stdout:
            _ack(run, line)
            if kill_after is not None and len(run.acked) >= kill_after:
                proc.send_signal(signal.SIGKILL)
                break
        rest = proc.stdout.read()  # acks written before the child died still count
        for line in rest.splitlines(keepends=True):
            if line.endswith("\n"):
                _ack(run, line)
        run.returncode = proc.wait(timeout)
        run.stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return run


def _ack(run: ChildRun, line: str) -> None:
    index, ts, durable = line.split()
    run.acked.append((int(index), None if ts == "-" else int(ts)))
    run.durable = int(durable)


class Model:
    """The state a writer child's acknowledged operations must have left."""

    def __init__(self, state: State | None = None) -> None:
        self.state: State = dict(state or {})
        self.history: list[tuple[int, str, Any]] = []  # (ts, key, value or REMOVED) of acked writes

    REMOVED = object()

    def apply(self, op: tuple[str, str, object], ts: int | None) -> None:
        kind, key, value = op
        if kind == "set":
            assert ts is not None
            self.state[key] = (value, ts)
            self.history.append((ts, key, value))
        elif kind == "delete" and ts is not None:
            self.state.pop(key, None)
            self.history.append((ts, key, self.REMOVED))

    def state_at(self, base: State, when: int) -> State:
        state = dict(base)
        for ts, key, value in self.history:
            if ts > when:
                break
            if value is self.REMOVED:
                state.pop(key, None)
            else:
                state[key] = (value, ts)
        return state


def check_survivors(directory: str, seed: int, run: ChildRun, before: State, buffer: int = 1 << 16) -> State:
    """Reopen the store and check it holds every acked write and nothing else.

    The store must equal the model after all acknowledged operations, or after one
    more (the operation in flight when the child was killed). Returns the state read.
    """
    model = Model(before)
    ops = operations(seed)
    for position, (index, ts) in enumerate(run.acked):
        assert index == position, "acks arrive in order"
        model.apply(next(ops), ts)
    with VersionedStore.open(directory, buffer_size=buffer) as store:
        actual: State = dict(store.items("ns", scope=Scope.PERMANENT))
    if actual == model.state:
        return actual
    kind, key, value = next(ops)  # the write that may have landed without its ack
    after = dict(model.state)
    if kind == "set":
        landed = actual.get(key)
        assert landed is not None and landed[0] == value, f"{key}: {landed} is neither acked nor in flight"
        after[key] = landed
    elif kind == "delete":
        after.pop(key, None)
    assert actual == after, _difference(model.state, actual)
    return actual


def _difference(expected: State, actual: State) -> str:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    return f"missing {missing[:5]}, unexpected {extra[:5]}, changed {changed[:5]}"
