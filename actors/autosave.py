"""Autosave: snapshots the coordinator takes on an interval, keeping the newest K files.

A task covers the whole cluster or one namespace; there is at most one per scope, so
setting a task replaces (and so stops) the one before. Tasks live in cluster.json
and resume after a restart. A task fires only once every shard serves (its journal
recovered), never while a snapshot is being loaded (a client holds a lease on that
file while it loads), and never writes over the file being loaded. A task's first
run comes one interval after it is set or after the coordinator starts.

Patterns take `{ts}` (the snapshot's cut, µs) and `{ns}` (the namespace, or "all");
a relative pattern is under the data directory. Only files the pattern produces are
ever pruned.
"""

from __future__ import annotations

import logging
import os
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from kvcluster.actors.snapshots import SnapshotJob
from kvcluster.errors import InvalidRequest, KVError

if TYPE_CHECKING:
    from kvcluster.actors.snapshots import Snapshotter

__all__ = ["Autosaver"]

log = logging.getLogger("kvcluster.coordinator")

MIN_INTERVAL: Final = 0.1  # seconds
MAX_LEASE: Final = 300.0  # seconds a load may go without renewing its lease
WHOLE: Final = "all"  # what {ns} becomes for a whole-cluster task


@dataclass
class AutosaveTask:
    namespace: str | None
    interval: float
    pattern: str
    keep: int  # newest files kept; 0 keeps all
    due: float = 0.0  # monotonic time of the next run
    running: bool = False
    held_back: int = 0  # times it was due while the cluster was not serving or was loading
    last: dict[str, Any] | None = None  # the last run's summary, or its error

    def to_manifest(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "interval": self.interval, "pattern": self.pattern, "keep": self.keep}

    def listing(self) -> dict[str, Any]:
        next_in = round(max(0.0, self.due - time.monotonic()), 3)
        return {**self.to_manifest(), "next_in": next_in, "held_back": self.held_back, "last": self.last}


def check_pattern(pattern: Any) -> str:
    if type(pattern) is not str or not pattern:
        raise InvalidRequest("an autosave pattern is a non-empty string")
    try:
        fields = {name for _text, name, _spec, _conv in string.Formatter().parse(pattern) if name is not None}
    except ValueError as exc:
        raise InvalidRequest(f"bad autosave pattern {pattern!r}: {exc}") from None
    if fields - {"ts", "ns"}:
        raise InvalidRequest(f"an autosave pattern may use {{ts}} and {{ns}} only, not {sorted(fields - {'ts', 'ns'})}")
    return pattern


class Autosaver:
    def __init__(
        self,
        root: str,
        manifest: dict[str, Any],
        write_manifest: Callable[[dict[str, Any]], None],
        snapshots: Snapshotter,
        serving: Callable[[], bool],
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.write_manifest = write_manifest
        self.snapshots = snapshots
        self.serving = serving
        self.tasks: dict[str | None, AutosaveTask] = {}
        self.leases: dict[str, float] = {}  # a file being loaded -> monotonic expiry of its lease
        now = time.monotonic()
        for entry in manifest.get("autosave", []):
            try:
                task = self._task(entry["namespace"], entry["interval"], entry["pattern"], entry["keep"])
            except (KVError, KeyError, TypeError) as exc:
                log.error("autosave task %r in cluster.json ignored: %s", entry, exc)
                continue
            task.due = now + task.interval
            self.tasks[task.namespace] = task

    # -- requests --------------------------------------------------------------------

    def configure(self, namespace: Any, interval: Any, pattern: Any, keep: Any) -> None:
        """AUTOSAVE_SET: replace the task of `namespace` (None: the whole cluster);
        interval 0 removes it."""
        if namespace is not None and type(namespace) is not str:
            raise InvalidRequest("an autosave namespace is a string or nil")
        if type(interval) not in (int, float) or interval < 0:
            raise InvalidRequest(f"an autosave interval is a number of seconds >= 0, not {interval!r}")
        if interval == 0:
            self.tasks.pop(namespace, None)
        else:
            task = self._task(namespace, interval, pattern, keep)
            task.due = time.monotonic() + task.interval
            self.tasks[namespace] = task  # the old task (if any) is gone with its schedule
        self.manifest["autosave"] = [task.to_manifest() for task in self.tasks.values()]
        self.write_manifest(self.manifest)

    def listing(self) -> list[dict[str, Any]]:
        return [task.listing() for task in self.tasks.values()]

    def loading(self, path: Any, lease: Any) -> None:
        """LOADING: a client loads the snapshot at `path` for up to `lease` more seconds;
        a nil lease (or 0) ends it."""
        if type(path) is not str or not os.path.isabs(path):
            raise InvalidRequest("LOADING takes [absolute path, lease seconds]")
        real = os.path.realpath(path)
        if not lease:
            self.leases.pop(real, None)
            return
        if type(lease) not in (int, float) or not 0 < lease <= MAX_LEASE:
            raise InvalidRequest(f"a load lease is 0 < seconds <= {MAX_LEASE}, not {lease!r}")
        self.leases[real] = time.monotonic() + float(lease)

    def check_target(self, path: str) -> None:
        """Refuse to write a snapshot over a file being loaded."""
        if os.path.realpath(path) in self._loading():
            raise InvalidRequest(f"{path} is being loaded: a snapshot may not overwrite it")

    # -- the schedule ------------------------------------------------------------------

    def next_due(self) -> float | None:
        dues = [task.due for task in self.tasks.values() if not task.running]
        return min(dues) if dues else None

    def tick(self, now: float) -> None:
        for task in list(self.tasks.values()):
            if task.running or task.due > now:
                continue
            if not self.serving() or self._loading():
                task.due = now + min(task.interval, 1.0)  # look again soon
                task.held_back += 1
                continue
            task.due = now + task.interval
            task.running = True
            self.snapshots.request(self._job(task))

    def _job(self, task: AutosaveTask) -> SnapshotJob:
        def path(cut: int) -> str:
            target = self._path(task, cut)
            self.check_target(target)
            return target

        def done(summary: dict[str, Any] | None, error: KVError | None) -> None:
            task.running = False
            task.last = summary if error is None else {"error": str(error)}
            if error is None and self.tasks.get(task.namespace) is task:
                self._prune(task)

        return SnapshotJob(path, task.namespace, done)

    def _loading(self) -> set[str]:
        now = time.monotonic()
        for path in [p for p, expiry in self.leases.items() if expiry <= now]:
            del self.leases[path]  # the loader went away without saying so
        return set(self.leases)

    def _task(self, namespace: Any, interval: Any, pattern: Any, keep: Any) -> AutosaveTask:
        if type(interval) not in (int, float) or interval < MIN_INTERVAL:
            raise InvalidRequest(f"an autosave interval is at least {MIN_INTERVAL} s, not {interval!r}")
        if type(keep) is not int or keep < 0:
            raise InvalidRequest(f"autosave keep is a count >= 0, not {keep!r}")
        return AutosaveTask(namespace, float(interval), check_pattern(pattern), keep)

    def _path(self, task: AutosaveTask, cut: int) -> str:
        name = task.pattern.format(ts=cut, ns=_file_safe(task.namespace))
        return name if os.path.isabs(name) else os.path.join(self.root, name)

    def _prune(self, task: AutosaveTask) -> None:
        """Delete all but the newest `keep` files this task's pattern made."""
        if task.keep == 0 or "{ts}" not in task.pattern:
            return
        sample = self._path(task, 0)
        directory = os.path.dirname(sample)
        base = task.pattern.format(ts="\0", ns=_file_safe(task.namespace))
        head, tail = os.path.basename(base).split("\0", 1)
        if "\0" in tail:
            return  # {ts} twice: no single number to sort by; keep everything
        matcher = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail))
        try:
            names = os.listdir(directory)
        except OSError as exc:
            log.warning("autosave: cannot list %s: %s", directory, exc)
            return
        made = sorted((int(m.group(1)), name) for name in names if (m := matcher.fullmatch(name)))
        for _ts, name in made[: max(0, len(made) - task.keep)]:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError as exc:
                log.warning("autosave: cannot remove %s: %s", name, exc)


def _file_safe(namespace: str | None) -> str:
    """A namespace as part of a file name: never a path of its own."""
    return WHOLE if namespace is None else re.sub(r"[^A-Za-z0-9_.-]", "_", namespace).lstrip(".") or "_"
