"""Where a value lives: `PERMANENT` values are journaled, `EPHEMERAL` ones only in memory."""

from __future__ import annotations

import enum
from typing import Any

from kvcluster.errors import InvalidRequest

__all__ = ["Scope", "checked_scope"]


class Scope(enum.IntEnum):
    """The lifetime of one value. The numbers are the journal's scope byte."""

    PERMANENT = 1  # journaled: survives restarts and crashes as its durability mode says
    EPHEMERAL = 2  # memory only: gone after the store (or its shard) restarts


def checked_scope(scope: Any) -> Scope:
    """`scope`, if it is a Scope; InvalidRequest otherwise (an int or a str is not one)."""
    if not isinstance(scope, Scope):
        raise InvalidRequest(f"scope must be a kvcluster.Scope, not {scope!r}")
    return scope
