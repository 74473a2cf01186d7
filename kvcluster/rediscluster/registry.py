"""Namespaces in a Redis Cluster: the registry hash, its per-client cache, and the
administration plans (create, update, delete, list).

The registry is one hash, `kv|{meta}|namespaces`: field = name, value = the limits
(layout.py). "default" always exists: its entry is added when a client connects,
and it reads as no limits even where it is missing. Data operations check their
namespace — that it exists, and its limits — against a cache each client keeps for
LIMITS_TTL seconds, so they cost no extra round trip: a change made by another
client is seen within that time; the client that makes it sees it at once.

Key counting (only while max_keys > 0) is reserve-first: a write that would create
keys first raises the namespace's counter (`kv|{meta}|count|<ns>`, in the registry's
slot) and takes back what it did not use; a delete lowers it after the key is gone.
A crash between two steps can leave the counter too high (the namespace refuses new
keys early) but never too low, so `max_keys` is never exceeded by that.
"""

from __future__ import annotations

import time
from typing import Any, Final

from kvcluster.errors import ClusterUnavailable, InvalidRequest, KVError, NamespaceExists, NamespaceNotFound
from kvcluster.keys import encode_namespace
from kvcluster.rediscluster.layout import (
    REGISTRY_KEY,
    Limits,
    counter_key,
    decode_limits,
    encode_limits,
    namespace_pattern,
)
from kvcluster.rediscluster.plans import Command, Plan, chunked, single
from kvcluster.rediscluster.scripts import NS_CREATE, NS_DELETE, NS_UPDATE

__all__ = ["DEFAULT_NAMESPACE", "LIMITS_TTL", "SCAN_PAGE", "Registry", "count_keys", "scan_page"]

DEFAULT_NAMESPACE: Final = "default"
LIMITS_TTL: Final = 1.0  # seconds a client trusts its copy of a namespace's entry
SCAN_PAGE: Final = 1000  # keys a SCAN call asks one node for
CAS_RETRIES: Final = 16  # tries of an update whose entry keeps changing under it


def limit(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise InvalidRequest(f"{what} must be an integer >= 0 (0: no limit), not {value!r}")
    return value


def _missing(name: Any) -> NamespaceNotFound:
    return NamespaceNotFound(f"namespace {name!r} does not exist")


def _valid_name(name: Any) -> bytes:
    """The name's bytes; a name that could not exist is NamespaceNotFound (as locally)."""
    try:
        return encode_namespace(name)
    except InvalidRequest:
        raise _missing(name) from None


class Registry:
    """One client's view of the namespace registry."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Limits, float]] = {}

    # -- the data path ---------------------------------------------------------------

    def limits(self, name: str, *, fresh: bool = False) -> Plan[Limits]:
        """The namespace's limits: cached for LIMITS_TTL s; NamespaceNotFound if it is gone."""
        cached = self._cache.get(name)
        now = time.monotonic()
        if cached is not None and not fresh and now - cached[1] < LIMITS_TTL:
            return cached[0]
        raw = yield from single(Command(("HGET", REGISTRY_KEY, name)))
        if raw is None and name != DEFAULT_NAMESPACE:
            self._cache.pop(name, None)
            raise _missing(name)
        limits = Limits(0, 0) if raw is None else decode_limits(raw, name)
        self._cache[name] = (limits, now)
        return limits

    # -- administration --------------------------------------------------------------

    def ensure_default(self) -> Plan[None]:
        yield from single(Command(("HSETNX", REGISTRY_KEY, DEFAULT_NAMESPACE, encode_limits(Limits(0, 0)))))

    def names(self) -> Plan[list[str]]:
        fields = yield from single(Command(("HKEYS", REGISTRY_KEY)))
        return sorted({DEFAULT_NAMESPACE, *(field.decode() for field in fields)})

    def entries(self) -> Plan[dict[str, Limits]]:
        raw = yield from single(Command(("HGETALL", REGISTRY_KEY)))
        entries = {DEFAULT_NAMESPACE: Limits(0, 0)}
        entries.update({field.decode(): decode_limits(value, field.decode()) for field, value in raw.items()})
        return dict(sorted(entries.items()))

    def create(self, name: str, max_keys: Any, max_value_bytes: Any) -> Plan[None]:
        ns = encode_namespace(name)
        limits = Limits(limit(max_keys, "max_keys"), limit(max_value_bytes, "max_value_bytes"))
        created = yield from single(NS_CREATE.call([REGISTRY_KEY, counter_key(ns)], [ns, encode_limits(limits)]))
        if not created:
            raise NamespaceExists(f"namespace {name!r} already exists")
        self._cache[name] = (limits, time.monotonic())

    def update(self, name: str, max_keys: Any, max_value_bytes: Any, nodes: list[str]) -> Plan[None]:
        """Change limits (None keeps one). Turning key counting on counts the keys."""
        ns = _valid_name(name)
        for _attempt in range(CAS_RETRIES):
            raw = yield from single(Command(("HGET", REGISTRY_KEY, name)))
            if raw is None and name != DEFAULT_NAMESPACE:
                raise _missing(name)
            old = Limits(0, 0) if raw is None else decode_limits(raw, name)
            new = Limits(
                old.max_keys if max_keys is None else limit(max_keys, "max_keys"),
                old.max_value_bytes if max_value_bytes is None else limit(max_value_bytes, "max_value_bytes"),
            )
            counter = "keep"
            if new.max_keys and not old.max_keys:
                counter = "reset"
            elif old.max_keys and not new.max_keys:
                counter = "drop"
            changed = yield from single(
                NS_UPDATE.call([REGISTRY_KEY, counter_key(ns)], [name, raw or b"", encode_limits(new), counter])
            )
            if changed == -1:
                raise _missing(name)
            if changed == 1:
                self._cache[name] = (new, time.monotonic())
                if counter == "reset":  # writers count from now on; add the keys already there
                    keys = yield from count_keys(ns, nodes)
                    yield from single(Command(("INCRBY", counter_key(ns), keys)))
                return
        raise ClusterUnavailable(f"namespace {name!r} kept changing while this update ran; retry")

    def delete(self, name: str, nodes: list[str]) -> Plan[None]:
        """Remove the namespace from the registry, then every key of it (not atomic)."""
        if name == DEFAULT_NAMESPACE:
            raise InvalidRequest("the default namespace always exists")
        ns = _valid_name(name)
        removed = yield from single(NS_DELETE.call([REGISTRY_KEY, counter_key(ns)], [name]))
        self._cache.pop(name, None)
        if not removed:
            raise _missing(name)
        for node in nodes:
            cursor = 0
            while True:
                cursor, keys = yield from scan_page(node, cursor, namespace_pattern(ns))
                outcomes = yield from chunked([Command(("UNLINK", key)) for key in keys])
                for outcome in outcomes:
                    if isinstance(outcome, KVError):
                        raise outcome
                if not cursor:
                    break


def scan_page(node: str, cursor: int, pattern: bytes, count: int = SCAN_PAGE) -> Plan[tuple[int, list[bytes]]]:
    """One SCAN call on one primary: (next cursor, 0 when done; the keys it matched)."""
    result = yield from single(Command(("SCAN", cursor, "MATCH", pattern, "COUNT", count), node))
    cursors, keys = result
    if isinstance(cursors, dict):  # redis-py answers a targeted SCAN as {node: cursor}
        cursors = next(iter(cursors.values()), 0)
    return int(cursors), list(keys)


def count_keys(ns: bytes, nodes: list[str]) -> Plan[int]:
    """The keys of a namespace, counted by SCAN on every primary."""
    total = 0
    for node in nodes:
        cursor = 0
        while True:
            cursor, keys = yield from scan_page(node, cursor, namespace_pattern(ns))
            total += len(keys)
            if not cursor:
                break
    return total
