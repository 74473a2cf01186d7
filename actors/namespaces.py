"""The namespace registry: names and limits, kept in DATA/cluster.json by the coordinator.

Every change is written to the manifest (atomically) before any shard hears of it,
so a shard that restarts reads the current list. Deleting a namespace takes two
steps: it is marked `dropping` (no shard serves it any more), each shard removes its
keys, and only when every shard has done so does the name leave the manifest — so a
shard that was down meanwhile cannot bring old keys back under a re-created name.
"""

from __future__ import annotations

import time
from typing import Any

from kvcluster.datadir import DataDir
from kvcluster.errors import InvalidRequest, NamespaceExists, NamespaceNotFound
from kvcluster.keys import encode_namespace

__all__ = ["DEFAULT_NAMESPACE", "NamespaceRegistry"]

DEFAULT_NAMESPACE = "default"


def _limit(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise InvalidRequest(f"{what} must be an integer >= 0 (0: no limit), not {value!r}")
    return value


class NamespaceRegistry:
    def __init__(self, data: DataDir, manifest: dict[str, Any], shards: int) -> None:
        self.data = data
        self.manifest = manifest
        self.shards = shards
        self.spaces: dict[str, dict[str, Any]] = manifest.setdefault("namespaces", {})
        if DEFAULT_NAMESPACE not in self.spaces:
            self.spaces[DEFAULT_NAMESPACE] = self._entry(0, 0)
            self.save()

    @staticmethod
    def _entry(max_keys: int, max_value_bytes: int) -> dict[str, Any]:
        return {"max_keys": max_keys, "max_value_bytes": max_value_bytes, "created": time.time_ns() // 1000}

    def save(self) -> None:
        self.data.write_manifest(self.manifest)

    def active(self) -> dict[str, list[int]]:
        """{name: [max_keys, max_value_bytes]} of the namespaces shards serve."""
        return {
            name: [entry["max_keys"], entry["max_value_bytes"]]
            for name, entry in self.spaces.items()
            if not entry.get("dropping")
        }

    def names(self) -> list[str]:
        return sorted(self.active())

    def get(self, name: Any) -> dict[str, Any]:
        entry = self.spaces.get(name) if isinstance(name, str) else None
        if entry is None or entry.get("dropping"):
            raise NamespaceNotFound(f"namespace {name!r} does not exist")
        return entry

    def create(self, name: Any, max_keys: Any, max_value_bytes: Any, max_namespaces: int) -> None:
        encode_namespace(name)
        entry = self.spaces.get(name)
        if entry is not None:
            what = "is still being deleted" if entry.get("dropping") else "already exists"
            raise NamespaceExists(f"namespace {name!r} {what}")
        if max_namespaces and len(self.active()) >= max_namespaces:
            raise InvalidRequest(f"the cluster holds its max_namespaces={max_namespaces} namespaces")
        self.spaces[name] = self._entry(_limit(max_keys, "max_keys"), _limit(max_value_bytes, "max_value_bytes"))
        self.save()

    def update(self, name: Any, max_keys: Any, max_value_bytes: Any) -> bool:
        """Change limits (None keeps one); returns True if max_keys changed."""
        entry = self.get(name)
        changed = False
        if max_keys is not None:
            changed = _limit(max_keys, "max_keys") != entry["max_keys"]
            entry["max_keys"] = max_keys
        if max_value_bytes is not None:
            entry["max_value_bytes"] = _limit(max_value_bytes, "max_value_bytes")
        self.save()
        return changed

    def start_drop(self, name: Any) -> None:
        if name == DEFAULT_NAMESPACE:
            raise InvalidRequest("the default namespace always exists")
        entry = self.get(name)
        entry["dropping"] = True
        entry["dropped_by"] = []
        self.save()

    def dropping(self) -> list[str]:
        return [name for name, entry in self.spaces.items() if entry.get("dropping")]

    def dropped(self, name: str, shard: int) -> None:
        """Shard `shard` removed every key of `name`; forget the name once all have."""
        entry = self.spaces.get(name)
        if entry is None or not entry.get("dropping"):
            return
        if shard not in entry["dropped_by"]:
            entry["dropped_by"].append(shard)
        if len(entry["dropped_by"]) >= self.shards:
            del self.spaces[name]
        self.save()
