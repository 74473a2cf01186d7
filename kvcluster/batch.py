"""The public types of batches: `BatchMode` and `BatchResult`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from kvcluster.errors import KVError

__all__ = ["BatchMode", "BatchResult"]


class BatchMode(enum.Enum):
    """How a batch treats its items (see README, Batches)."""

    ALL_OR_NOTHING = "all_or_nothing"  # every change applies or none does, across shards and crashes
    BEST_EFFORT = "best_effort"  # each item on its own; what failed is listed in `errors`


@dataclass(frozen=True)
class BatchResult:
    """What a batch did.

    `processed`: items applied (writes) or read (`get_many`).
    `data`: per key that was applied or read, in input order — the timestamp of each write (`set_many`,
    `delete_many`), the value read (`get_many`) or consumed (`consume_many`).
    `errors`: per key, the `KVError` that kept an item from applying (BEST_EFFORT);
    None when there were none.
    """

    processed: int
    data: dict[str, Any]
    errors: dict[str, KVError] | None = None

    @property
    def ok(self) -> bool:
        """True when every item applied (or was read)."""
        return not self.errors
