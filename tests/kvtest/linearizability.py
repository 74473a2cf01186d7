"""A per-key linearizability checker for histories of get, set and delete.

No such checker is on PyPI, so the tests carry this one. It is the Wing & Gong search
with the memoization of Lowe ("Testing for linearizability", 2017) as Porcupine
implements it: walk the history's call and return events in time order; at a call,
try to linearize that operation now (the model must accept its observed output); at a
return whose operation has not been linearized, backtrack. A (set of linearized
operations, model state) pair already explored is never explored again, which keeps
the search small for the histories tests produce.

Each key is checked on its own (a key is a register: operations on different keys
never constrain each other). An operation whose outcome is unknown — a write that
timed out or lost its connection — has no return: it may take effect at any moment
after its call, or never, which is exactly an operation that returns at infinity.
A read whose outcome is unknown tells nothing and is left out of the history.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["ABSENT", "Operation", "Recorder", "Violation", "check", "check_key"]

ABSENT: Final = None  # the model's state of a key that holds nothing
NEVER: Final = float("inf")  # the return time of an operation whose outcome is unknown


@dataclass(frozen=True)
class Operation:
    """One call on one key: `kind` is get, set or delete; `value` is what a set wrote;
    `output` is what a get returned (None: missing) or whether a delete removed a key;
    `returned` is NEVER when the outcome is unknown."""

    client: int
    kind: str
    key: str
    value: Any
    output: Any
    called: float
    returned: float

    @property
    def unknown(self) -> bool:
        return self.returned == NEVER


@dataclass(frozen=True)
class Violation:
    """A key whose history no order of its operations explains."""

    key: str
    operations: list[Operation]

    def __str__(self) -> str:
        lines = [f"history of key {self.key!r} is not linearizable ({len(self.operations)} operations):"]
        for op in sorted(self.operations, key=lambda o: o.called)[:40]:
            end = "?" if op.unknown else f"{op.returned:.0f}"
            lines.append(f"  client {op.client}: {op.kind}({op.value!r}) -> {op.output!r}  [{op.called:.0f}, {end}]")
        return "\n".join(lines)


def step(state: Any, op: Operation) -> tuple[bool, Any]:
    """The register model: whether `op`'s output is possible in `state`, and the state after."""
    if op.kind == "get":
        return op.output == state, state
    if op.kind == "set":
        return True, op.value
    if op.kind == "delete":
        return (state is not ABSENT) == bool(op.output) or op.unknown, ABSENT
    raise ValueError(f"unknown operation {op.kind!r}")


def check_key(key: str, operations: list[Operation], initial: Any = ABSENT) -> bool:
    """Whether `operations` on one key are linearizable from `initial`."""
    n = len(operations)
    if n == 0:
        return True
    # Events in time order: (time, is_return, op index). At equal times a call comes
    # before a return, so operations that touch are treated as concurrent (lenient,
    # and the clock cannot order them anyway).
    events = sorted(
        [(op.called, 0, i) for i, op in enumerate(operations)]
        + [(op.returned, 1, i) for i, op in enumerate(operations)]
    )
    # A doubly linked list over the events, with a head sentinel at index 0.
    size = len(events) + 1
    nxt = list(range(1, size + 1))
    nxt[-1] = -1
    prv = list(range(-1, size - 1))
    is_return = [False] + [bool(e[1]) for e in events]
    op_of = [-1] + [e[2] for e in events]
    match = [0] * size  # call event -> its return event
    call_at: dict[int, int] = {}
    for position in range(1, size):
        if is_return[position]:
            match[call_at[op_of[position]]] = position
        else:
            call_at[op_of[position]] = position

    def lift(position: int) -> None:
        for p in (position, match[position]):
            nxt[prv[p]] = nxt[p]
            if nxt[p] != -1:
                prv[nxt[p]] = prv[p]

    def unlift(position: int) -> None:
        for p in (match[position], position):
            nxt[prv[p]] = p
            if nxt[p] != -1:
                prv[nxt[p]] = p

    state = initial
    linearized = 0
    seen: set[tuple[int, Any]] = set()
    calls: list[tuple[int, Any]] = []  # (call event, state before it)
    entry = nxt[0]
    while nxt[0] != -1:
        if entry == -1:
            return False  # cannot happen with a well-formed list; be safe
        if not is_return[entry]:
            index = op_of[entry]
            ok, after = step(state, operations[index])
            if ok:
                marked = linearized | (1 << index)
                if (marked, _hashable(after)) not in seen:
                    seen.add((marked, _hashable(after)))
                    calls.append((entry, state))
                    state, linearized = after, marked
                    lift(entry)
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            if not calls:
                return False  # the earliest pending return cannot be explained
            entry, state = calls.pop()
            linearized &= ~(1 << op_of[entry])
            unlift(entry)
            entry = nxt[entry]
    return True


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def check(operations: list[Operation], initial: Callable[[str], Any] = lambda key: ABSENT) -> list[Violation]:
    """Every key whose history is not linearizable (an empty list: all are)."""
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in operations:
        by_key[op.key].append(op)
    return [Violation(key, ops) for key, ops in by_key.items() if not check_key(key, ops, initial(key))]


@dataclass
class Recorder:
    """Records one client's operations with their call and return times (monotonic ns,
    one clock for every process on the host)."""

    client: int
    operations: list[Operation] = field(default_factory=list)

    @contextmanager
    def call(self, kind: str, key: str, value: Any = None) -> Iterator[dict[str, Any]]:
        """Wrap one call: set `out["output"]` inside; an exception in `unknown` (a
        timeout, a lost connection) makes a write's outcome unknown and drops a read."""
        out: dict[str, Any] = {"output": None, "unknown": False}
        called = time.monotonic_ns()
        yield out
        returned = NEVER if out["unknown"] else time.monotonic_ns()
        if out["unknown"] and kind == "get":
            return  # an unanswered read says nothing
        self.operations.append(Operation(self.client, kind, key, value, out["output"], called, returned))
