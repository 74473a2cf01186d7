"""Settings shared by the journal, the shards and the CLI, validated where they are made."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from kvcluster.errors import InvalidRequest

__all__ = ["DEFAULT_BUFFER_SIZE", "DEFAULT_FLUSH_INTERVAL", "DEFAULT_SHARD_BUFFER_SIZE", "Durability", "Retention"]

DEFAULT_BUFFER_SIZE = 1 << 20  # a VersionedStore on its own
DEFAULT_SHARD_BUFFER_SIZE = 64 << 20  # a shard's journal: rotations (which pause it) stay rare
DEFAULT_FLUSH_INTERVAL = 0.1  # seconds: `interval` durability flushes at least this often


class Durability(enum.StrEnum):
    """When a write is acknowledged, and so what it survives (see README, Guarantees)."""

    NONE = "none"  # in the journal's memory map: survives a crash of any process
    INTERVAL = "interval"  # as NONE, and flushed to disk within DEFAULT_FLUSH_INTERVAL
    ALWAYS = "always"  # flushed to disk before the ack; one flush serves a whole group

    @classmethod
    def parse(cls, value: str | Durability) -> Durability:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise InvalidRequest(f"durability must be one of {choices}, not {value!r}") from None


@dataclass(frozen=True)
class Retention:
    """Which archived journals to keep; an archive is deleted once any limit is passed.

    Point-in-time recovery reaches back to the oldest archive kept. `None` means no
    limit of that kind. Archives are deleted oldest first, so the history kept is
    always one unbroken stretch ending at the active journal.
    """

    max_archives: int | None = 64
    max_age: float | None = 7 * 24 * 3600.0  # seconds since the archive's cut
    max_bytes: int | None = 1 << 30  # total size of the archives on disk

    def __post_init__(self) -> None:
        for name in ("max_archives", "max_age", "max_bytes"):
            limit = getattr(self, name)
            if limit is not None and not 0 <= limit < math.inf:
                raise InvalidRequest(f"retention {name} must be a finite number >= 0 or None, not {limit!r}")

    @classmethod
    def keep_all(cls) -> Retention:
        return cls(max_archives=None, max_age=None, max_bytes=None)

    def to_dict(self) -> dict[str, Any]:
        """The limits as JSON-ready values (how `cluster.json` keeps them)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, limits: Mapping[str, Any] | None, base: Retention | None = None) -> Retention:
        """`base` (the defaults if None) with the limits `limits` names; InvalidRequest if malformed."""
        merged = (base or cls()).to_dict()
        for name, limit in (limits or {}).items():
            if name not in merged:
                raise InvalidRequest(f"unknown retention limit {name!r}")
            kind = float if name == "max_age" else int
            if limit is not None and (type(limit) is bool or not isinstance(limit, int | kind)):
                raise InvalidRequest(f"retention {name} must be a number or None, not {limit!r}")
            merged[name] = None if limit is None else kind(limit)
        return cls(**merged)
