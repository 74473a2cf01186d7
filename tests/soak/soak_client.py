"""One soak client: a process of its own, with its own connection, running a mixed load
until told to stop, and checking every read it makes.

Own keys (`c<n>:<run>:<i>`) are written by this client alone, so it knows what each may hold:
`KeyModel` keeps the last write known to have taken effect and the writes after it whose
outcome is unknown (any `KVError`: a timeout, a lost connection, a shard restarting).
Shared keys (`lin:<run>:<window>:<i>`) are written by every client; their operations are
recorded with call and return times (kvtest.linearizability's Recorder) and sent to the
runner in chunks of at most FLUSH_OPS, which checks each window's history once every
client has moved past it. (Holding a whole window instead made a client's memory follow
the longest window: a slow check in the runner delays the next one, and the allocator
keeps the high-water mark. The 60-minute soak's clients grew 22-28% that way.)
"""

from __future__ import annotations

import functools
import random
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kvtest.linearizability import Operation, Recorder

import kvcluster
from kvcluster import BatchFailed, BatchMode, KeyNotFound, KVError

__all__ = ["ClientConfig", "KeyModel", "Shared", "Write", "client_main", "make_value"]

T = TypeVar("T")

FINAL_CHECK_SECONDS = 30.0  # how long the last sweep keeps retrying a key that does not answer
SINGLE_KEY = frozenset({"get", "get_versioned", "set", "delete", "final", "shared_get", "shared_set", "shared_delete"})
MAX_REPORTED = 20  # violations and tracebacks kept in full per client (all are counted)
FLUSH_OPS = 256  # shared-key operations a client holds before handing them to the runner


@dataclass(frozen=True)
class ClientConfig:
    data_dir: str
    number: int
    timeout: float
    seed: int
    run: str = "0"  # in every key: a soak on a --data directory used before starts on keys of its own
    own_keys: int = 100
    lin_keys: int = 8
    checkpoint_every: float = 10.0  # seconds between sweeps that read every own key


@dataclass
class Shared:
    """What the runner and its clients share. `window` is the current history window
    (the runner moves it on); `heartbeat[n]` the monotonic time of client n's last
    finished operation and `done[n]` its operation count (read by the watchdog)."""

    # multiprocessing Queue: ("ready", n) | ("ops", n, window, ops): more of a window's
    # operations | ("history", n, window, ops): the last of them | ("result", n, report)
    queue: Any
    stop: Any  # multiprocessing Event: finish the load, run the final check, report
    window: Any  # multiprocessing Value("i")
    heartbeat: Any  # multiprocessing Array("d")
    done: Any  # multiprocessing Array("q")


def make_value(client: int, key: str, seq: int, pad: int = 0) -> str:
    """A value no other write ever makes: who wrote it, to which key, as its n-th write."""
    return f"{seq}|{client}|{key}" + ("|" + "x" * pad if pad else "")


@dataclass(frozen=True)
class Write:
    value: str | None  # None: the key holds nothing (deleted, or never written)
    ts: int | None = None  # the write's timestamp, when known


@dataclass
class KeyModel:
    """What one of a client's own keys may hold: `base`, the last write known to have
    taken effect (acknowledged, or seen by a read), or one of `pending`, the writes
    issued after it whose outcome is unknown. A read that sees a pending write makes it
    the base and drops the pending writes before it: a shard applies one connection's
    requests in order, so an older write cannot take effect after a newer one did."""

    client: int
    key: str
    base: Write = field(default_factory=lambda: Write(None))
    pending: list[Write] = field(default_factory=list)
    issued: int = -1  # the highest sequence number written to this key

    def acknowledged(self, write: Write) -> None:
        self.base = write
        self.pending.clear()

    def unknown(self, write: Write) -> None:
        self.pending.append(write)

    def observe(self, value: Any, ts: int | None = None) -> str | None:
        """Check a read of this key (value None: nothing there); a description of the
        violation, or None if the read is one the model allows."""
        candidates = [self.base, *self.pending]
        for index, write in enumerate(candidates):
            if write.value != value:
                continue
            if ts is not None and write.ts is not None and ts != write.ts:
                return f"{self.key}: read {_short(value)} at ts {ts}, but that write was acknowledged at ts {write.ts}"
            self.base = Write(write.value, write.ts if write.ts is not None else ts)
            self.pending = candidates[index + 1 :]
            return None
        return f"{self.key}: read {_short(value)}: {self._explain(value)}"

    def deleted(self, existed: bool) -> str | None:
        """An acknowledged delete: it must have found the key exactly when the model is sure
        the key held a value."""
        problem = None
        if not self.pending and existed != (self.base.value is not None):
            held = "held" if self.base.value is not None else "did not hold"
            problem = f"{self.key}: delete returned {existed}, but the key {held} a value"
        self.acknowledged(Write(None))
        return problem

    def _explain(self, value: Any) -> str:
        expected = _short(self.base.value) + (f" or one of {len(self.pending)} unknown writes" if self.pending else "")
        if value is None:
            return f"an acknowledged write is lost (expected {expected})"
        parts = value.split("|") if isinstance(value, str) else []
        if len(parts) >= 3 and parts[1] == str(self.client) and parts[2] == self.key and parts[0].isdigit():
            seq = int(parts[0])
            if seq > self.issued:
                return f"a value never written (sequence {seq} > {self.issued}; expected {expected})"
            return (
                f"a write of this client that cannot be there now: superseded, or reported failed (expected {expected})"
            )
        return f"a value never written to this key (expected {expected})"


def _error_name(exc: KVError) -> str:
    """The error's type; for a refused batch also why (a conflict, a timed-out part, ...)."""
    if isinstance(exc, BatchFailed) and exc.errors:
        causes = sorted({type(error).__name__ for error in exc.errors.values()})
        return f"BatchFailed({', '.join(causes)})"
    return type(exc).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class LoadClient:
    def __init__(self, config: ClientConfig, shared: Shared) -> None:
        self.config = config
        self.shared = shared
        self.n = config.number
        self.rng = random.Random(config.seed * 1000 + config.number)
        self.own = [f"c{self.n}:{config.run}:{i}" for i in range(config.own_keys)]
        self.models = {key: KeyModel(self.n, key) for key in self.own}
        self.seq = 0
        self.recorder = Recorder(self.n)
        self.window = -1
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.errors_by_op: Counter[str] = Counter()
        self.latency_max: dict[str, float] = {}
        self.overruns = 0  # single-key operations that took longer than timeout + 10%
        self.unexpected: list[str] = []
        self.unexpected_count = 0
        self.violations: list[str] = []
        self.violation_count = 0
        self.reads_checked = 0
        self.checkpoints = 0
        self.unverified: list[str] = []
        self.history_ops = 0

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        self.client = kvcluster.connect(self.config.data_dir, timeout=self.config.timeout)
        self.ns = self.client.namespace("default")
        self.shared.queue.put(("ready", self.n))
        self._beat()
        next_checkpoint = time.monotonic() + self.config.checkpoint_every
        while not self.shared.stop.is_set():
            self._one_operation()
            if time.monotonic() >= next_checkpoint:
                self._checkpoint()
                next_checkpoint = time.monotonic() + self.config.checkpoint_every
        self._flush_history(final=True)
        self._final_check()
        self.client.close()
        self.shared.queue.put(("result", self.n, self.report()))

    def _one_operation(self) -> None:
        draw = self.rng.random()
        if draw < 0.7:
            key = self.rng.choice(self.own)
            if draw < 0.25:
                self._own_get(key)
            elif draw < 0.33:
                self._own_get_versioned(key)
            elif draw < 0.59:
                self._own_set(key)
            elif draw < 0.63:
                self._own_delete(key)
            elif draw < 0.67:
                self._own_set_many(self.rng.sample(self.own, self.rng.randint(2, 8)))
            else:
                self._own_get_many(self.rng.sample(self.own, self.rng.randint(2, 20)))
        else:
            self._shared_operation(draw)
            if len(self.recorder.operations) >= FLUSH_OPS:
                self._hand_over("ops")

    def _call(self, kind: str, function: Callable[[], T]) -> T | Exception:
        """Run one operation, timing and counting it; a KVError is counted by type, any
        other exception is a failure of the soak (kept with its traceback). Either way it
        comes back as the result: the caller decides what its outcome means."""
        started = time.monotonic()
        result: T | Exception
        try:
            result = function()
        except KVError as exc:
            self.errors[_error_name(exc)] += 1
            self.errors_by_op[f"{kind} {_error_name(exc)}"] += 1
            result = exc
        except Exception as exc:
            self.unexpected_count += 1
            if len(self.unexpected) < MAX_REPORTED:
                self.unexpected.append(f"{kind}: {traceback.format_exc()}")
            result = exc
        elapsed = time.monotonic() - started
        self.ops[kind] += 1
        if elapsed > self.latency_max.get(kind, 0.0):
            self.latency_max[kind] = elapsed
        if kind in SINGLE_KEY and elapsed > self.config.timeout * 1.1 + 0.05:
            self.overruns += 1
        self._beat()
        return result

    def _beat(self) -> None:
        self.shared.heartbeat[self.n] = time.monotonic()
        self.shared.done[self.n] += 1

    def _violation(self, text: str | None) -> None:
        self.reads_checked += 1
        if text is None:
            return
        self.violation_count += 1
        if len(self.violations) < MAX_REPORTED:
            self.violations.append(text)

    def _new_value(self, key: str, padded: bool = True) -> str:
        """The next unique value; own keys get values of mixed sizes (up to 2 KB), shared
        keys small ones (the runner keeps their histories until it checks them)."""
        self.seq += 1
        pad = self.rng.choice((0, 0, 0, 16, 200, 2000)) if padded else 0
        return make_value(self.n, key, self.seq, pad)

    # -- own keys ------------------------------------------------------------------------

    def _own_get(self, key: str) -> None:
        result = self._call("get", lambda: self.ns.get(key))
        if not isinstance(result, Exception):
            self._violation(self.models[key].observe(result))

    def _own_get_versioned(self, key: str) -> None:
        result = self._call("get_versioned", lambda: self.ns.get_versioned(key))
        if not isinstance(result, Exception):
            value, ts = result if result is not None else (None, None)
            self._violation(self.models[key].observe(value, ts))

    def _own_set(self, key: str) -> None:
        value = self._new_value(key)
        model = self.models[key]
        model.issued = self.seq
        result = self._call("set", lambda: self.ns.set(key, value))
        if isinstance(result, Exception):
            model.unknown(Write(value))
        else:
            model.acknowledged(Write(value, result))

    def _own_delete(self, key: str) -> None:
        model = self.models[key]
        result = self._call("delete", lambda: self.ns.delete(key))
        if isinstance(result, Exception):
            model.unknown(Write(None))
        else:
            self._violation(model.deleted(result))

    def _own_set_many(self, keys: list[str]) -> None:
        items = {key: self._new_value(key) for key in keys}
        for key in keys:
            self.models[key].issued = self.seq
        result = self._call("set_many", lambda: self.ns.set_many(items))
        if isinstance(result, BatchFailed):
            return  # refused as a whole: nothing was applied
        for key, value in items.items():
            if isinstance(result, Exception):
                self.models[key].unknown(Write(value))
            else:
                self.models[key].acknowledged(Write(value, result.data[key]))

    def _own_get_many(self, keys: list[str], kind: str = "get_many") -> list[str]:
        """Read `keys` in one BEST_EFFORT batch and check each; returns the keys not read."""
        result = self._call(kind, lambda: self.ns.get_many(keys, BatchMode.BEST_EFFORT))
        if isinstance(result, Exception):
            return keys
        missed = []
        errors = result.errors or {}
        for key in keys:
            if key in result.data:
                self._violation(self.models[key].observe(result.data[key]))
            elif isinstance(errors.get(key), KeyNotFound):
                self._violation(self.models[key].observe(None))
            else:
                missed.append(key)
        return missed

    def _checkpoint(self) -> None:
        self.checkpoints += 1
        for start in range(0, len(self.own), 20):
            self._own_get_many(self.own[start : start + 20], "checkpoint")

    def _final_check(self) -> None:
        """Every own key read once more, now that the faults have stopped: each must hold
        what the model allows. A key that does not answer within the bound is reported."""
        deadline = time.monotonic() + FINAL_CHECK_SECONDS
        left = list(self.own)
        while left and time.monotonic() < deadline:
            missed = []
            for key in left:
                result = self._call("final", functools.partial(self.ns.get_versioned, key))
                if isinstance(result, Exception):
                    missed.append(key)
                    continue
                value, ts = result if result is not None else (None, None)
                self._violation(self.models[key].observe(value, ts))
            left = missed
        self.unverified = left

    # -- shared keys (linearizability histories) ----------------------------------------

    def _shared_operation(self, draw: float) -> None:
        window = int(self.shared.window.value)
        if window != self.window:
            self._flush_history()
            self.window = window
        keys = [f"lin:{self.config.run}:{window}:{i}" for i in range(self.config.lin_keys)]
        key = self.rng.choice(keys)
        ns, recorder = self.ns, self.recorder
        if draw < 0.82:
            with recorder.call("get", key) as out:
                result = self._call("shared_get", lambda: ns.get(key))
                out["unknown"] = isinstance(result, Exception)
                out["output"] = None if isinstance(result, Exception) else result
        elif draw < 0.92:
            value = self._new_value(key, padded=False)
            with recorder.call("set", key, value) as out:
                out["unknown"] = isinstance(self._call("shared_set", lambda: ns.set(key, value)), Exception)
        elif draw < 0.95:
            with recorder.call("delete", key) as out:
                result = self._call("shared_delete", lambda: ns.delete(key))
                out["unknown"] = isinstance(result, Exception)
                out["output"] = None if isinstance(result, Exception) else result
        elif draw < 0.98:
            self._shared_set_many(self.rng.sample(keys, self.rng.randint(2, 3)))
        else:
            self._shared_get_many(self.rng.sample(keys, self.rng.randint(2, 3)))

    def _shared_set_many(self, keys: list[str]) -> None:
        """An atomic batch is, for each of its keys, one write somewhere inside the call."""
        items = {key: self._new_value(key, padded=False) for key in keys}
        called = time.monotonic_ns()
        result = self._call("shared_set_many", lambda: self.ns.set_many(items))
        returned = float("inf") if isinstance(result, Exception) else time.monotonic_ns()
        if isinstance(result, BatchFailed):
            return  # a conflict with another client's batch, or a part refused: nothing applied
        for key, value in items.items():
            self.recorder.operations.append(Operation(self.n, "set", key, value, None, called, returned))

    def _shared_get_many(self, keys: list[str]) -> None:
        called = time.monotonic_ns()
        result = self._call("shared_get_many", lambda: self.ns.get_many(keys, BatchMode.BEST_EFFORT))
        returned = time.monotonic_ns()
        if isinstance(result, Exception):
            return  # an unanswered read says nothing
        errors = result.errors or {}
        for key in keys:
            if key in result.data or isinstance(errors.get(key), KeyNotFound):
                output = result.data.get(key)
                self.recorder.operations.append(Operation(self.n, "get", key, None, output, called, returned))

    def _flush_history(self, final: bool = False) -> None:
        """Hand this window's last operations to the runner: this client is done with it."""
        if self.window >= 0 or final:
            self._hand_over("history")
        self.recorder = Recorder(self.n)

    def _hand_over(self, kind: str) -> None:
        self.history_ops += len(self.recorder.operations)
        self.shared.queue.put((kind, self.n, self.window, self.recorder.operations))
        self.recorder = Recorder(self.n)

    # -- the report ----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        return {
            "ops": dict(self.ops),
            "errors": dict(self.errors),
            "errors_by_op": dict(self.errors_by_op),
            "latency_max_s": self.latency_max,
            "overruns": self.overruns,
            "unexpected": self.unexpected,
            "unexpected_count": self.unexpected_count,
            "violations": self.violations,
            "violation_count": self.violation_count,
            "reads_checked": self.reads_checked,
            "checkpoints": self.checkpoints,
            "unverified": self.unverified,
            "history_ops": self.history_ops,
            "pending_unknown": sum(len(model.pending) for model in self.models.values()),
        }


def client_main(config: ClientConfig, shared: Shared) -> None:
    """The entry of a client process (spawned: a fresh interpreter)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C goes to the runner, which stops us in order
    LoadClient(config, shared).run()
