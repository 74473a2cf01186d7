"""Named crash points for tests, armed through the environment (etcd's gofail, in small).

Code marks each crash-sensitive step with `failpoint("rotate.next_written")`. A test
arms points for a child process with ``KV_FAILPOINTS="rotate.next_written=kill"``;
unarmed points cost one dictionary lookup. Actions:

``kill``      SIGKILL this process at the point (a crash exactly there)
``kill@N``    SIGKILL on the N-th time the point is reached (1-based)
``raise``     raise `FailpointHit` (an `OSError`, so I/O paths treat it as a failed call)
``raise@N``   raise on the N-th hit
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

__all__ = ["ENV_VAR", "FailpointHit", "failpoint", "parse_failpoints"]

ENV_VAR = "KV_FAILPOINTS"


class FailpointHit(OSError):
    """Raised by a point armed with ``raise``: an injected I/O failure."""


def parse_failpoints(spec: str) -> dict[str, tuple[str, int]]:
    """Parse ``name=action[@N],...`` into {name: (action, N)}; N is 0 for "every hit"."""
    armed: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, action = item.partition("=")
        action, _, nth = action.partition("@")
        if not sep or action not in ("kill", "raise") or (nth and not nth.isdigit()):
            raise ValueError(f"bad failpoint {item!r}: expected name=kill|raise[@N]")
        armed[name.strip()] = (action, int(nth or 0))
    return armed


class _Failpoints:
    """The points armed for this process, read once from the environment at import."""

    def __init__(self, armed: Mapping[str, tuple[str, int]]) -> None:
        self.armed = dict(armed)
        self.hits: dict[str, int] = {}

    def reach(self, name: str) -> None:
        action, nth = self.armed[name]
        count = self.hits[name] = self.hits.get(name, 0) + 1
        if nth and count != nth:
            return
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise FailpointHit(f"failpoint {name} hit")


_POINTS = _Failpoints(parse_failpoints(os.environ.get(ENV_VAR, "")))


def failpoint(name: str) -> None:
    """Mark a crash-sensitive step; does nothing unless a test armed `name`."""
    if name in _POINTS.armed:
        _POINTS.reach(name)
