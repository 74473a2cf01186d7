"""The backends one conformance suite runs on: the local engine and a Redis Cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kvcluster

__all__ = ["BACKENDS", "Backend"]

BACKENDS = ["local", "redis-cluster"]


@dataclass(frozen=True)
class Backend:
    """A backend by its address: a local cluster's data dir, or redis+cluster://..."""

    name: str
    address: str

    @property
    def redis(self) -> bool:
        return self.name == "redis-cluster"

    def connect(self) -> Any:
        return kvcluster.connect(self.address, timeout=10.0)
