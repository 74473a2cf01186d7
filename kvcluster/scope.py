"""Where a value lives: `PERMANENT` values are journaled, `EPHEMERAL` ones only in memory."""

from __future__ import annotations

import enum

__all__ = ["Scope"]


class Scope(enum.IntEnum):
    """The lifetime of one value. The numbers are the journal's scope byte."""

    PERMANENT = 1  # journaled: survives restarts and crashes as its durability mode says
    EPHEMERAL = 2  # memory only: gone after the store (or its shard) restarts
