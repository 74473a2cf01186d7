"""Named crash points for tests, armed through the environment (etcd's gofail, in small).

Code marks each crash-sensitive step with `failpoint("rotate.next_written")`. A test
arms points for a child process with ``KV_FAILPOINTS="rotate.next_written=kill"``;
unarmed points cost one dictionary lookup. Actions:

``kill``      SIGKILL this process at the point (a crash exactly there)
``kill@N``    SIGKILL on the N-th time the point is reached (1-based)
``raise``     raise `FailpointHit` (an `OSError`, so I/O paths treat it as a failed call)
``raise@N``   raise on the N-th hit

A running cluster is armed on the fly through ``KV_FAILPOINTS_DIR``: a test writes
the action (``kill`` or ``raise``) into the file ``<dir>/<point name>``, and the first
process of the cluster to reach that point takes the arming (it removes the file,
so exactly one process acts) and crashes there. Many crash cycles then run against
one cluster, the restarted processes included.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

__all__ = ["DIR_ENV_VAR", "ENV_VAR", "FailpointHit", "arm", "failpoint", "parse_failpoints"]

ENV_VAR = "KV_FAILPOINTS"
DIR_ENV_VAR = "KV_FAILPOINTS_DIR"
_ACTIONS = ("kill", "raise")


class FailpointHit(OSError):
    """Raised by a point armed with ``raise``: an injected I/O failure."""


def parse_failpoints(spec: str) -> dict[str, tuple[str, int]]:
    """Parse ``name=action[@N],...`` into {name: (action, N)}; N is 0 for "every hit"."""
    armed: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, action = item.partition("=")
        action, _, nth = action.partition("@")
        if not sep or action not in _ACTIONS or (nth and not nth.isdigit()):
            raise ValueError(f"bad failpoint {item!r}: expected name=kill|raise[@N]")
        armed[name.strip()] = (action, int(nth or 0))
    return armed


def arm(directory: str | os.PathLike[str], name: str, action: str = "kill") -> None:
    """Arm `name` once for whichever process of a cluster started with
    ``KV_FAILPOINTS_DIR=directory`` reaches it first."""
    if action not in _ACTIONS or "/" in name or not name:
        raise ValueError(f"bad failpoint {name!r}={action!r}")
    path = os.path.join(directory, name)
    with open(path + ".tmp", "w") as file:
        file.write(action)
    os.replace(path + ".tmp", path)


def _act(action: str, name: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise FailpointHit(f"failpoint {name} hit")


class _Failpoints:
    """The points armed for this process, read once from the environment at import."""

    def __init__(self, armed: Mapping[str, tuple[str, int]], directory: str | None) -> None:
        self.armed = dict(armed)
        self.hits: dict[str, int] = {}
        self.directory = directory

    def reach(self, name: str) -> None:
        action, nth = self.armed[name]
        count = self.hits[name] = self.hits.get(name, 0) + 1
        if nth and count != nth:
            return
        _act(action, name)

    def take(self, name: str) -> None:
        """Act on an arming left in the directory, if this process is the one to take it."""
        path = os.path.join(self.directory or "", name)
        taken = f"{path}.taken.{os.getpid()}"
        try:
            os.rename(path, taken)  # atomic: one process wins, the others find nothing
        except OSError:
            return
        with open(taken) as file:
            action = file.read().strip()
        os.unlink(taken)
        _act(action if action in _ACTIONS else "kill", name)


_POINTS = _Failpoints(parse_failpoints(os.environ.get(ENV_VAR, "")), os.environ.get(DIR_ENV_VAR) or None)


def failpoint(name: str) -> None:
    """Mark a crash-sensitive step; does nothing unless a test armed `name`."""
    if name in _POINTS.armed:
        _POINTS.reach(name)
    elif _POINTS.directory is not None:
        _POINTS.take(name)
