"""Redis Cluster addresses: `redis+cluster://host:port[,host:port...]`, parsed and checked.

Each node is a seed: the client asks any of them for the cluster's layout and finds
the rest itself, so one reachable node is enough. A host left out is loopback
(127.0.0.1), a port left out is Redis's 6379; IPv6 hosts go in brackets
(`[::1]:7000`). Credentials, paths and query strings are refused with a clear error
rather than ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from kvcluster.errors import InvalidRequest

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "SCHEME", "ClusterAddress", "is_redis_cluster", "parse_address"]

SCHEME: Final = "redis+cluster://"
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 6379
MAX_NODES: Final = 64

_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")


@dataclass(frozen=True)
class ClusterAddress:
    """The seed nodes of one Redis Cluster, in the order given, without repeats."""

    nodes: tuple[tuple[str, int], ...]

    def __str__(self) -> str:
        return SCHEME + ",".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.nodes)


def is_redis_cluster(address: object) -> bool:
    """True for an address this backend serves: a str starting with the scheme (a path never is)."""
    return isinstance(address, str) and address[: len(SCHEME)].lower() == SCHEME


def parse_address(address: str) -> ClusterAddress:
    """The nodes `address` names; InvalidRequest saying what is wrong with it."""
    if not is_redis_cluster(address):
        raise InvalidRequest(f"a Redis Cluster address starts with {SCHEME}, not {address!r}")
    rest = address[len(SCHEME) :]
    if rest.endswith("/"):
        rest = rest[:-1]
    for mark, what in (("@", "credentials"), ("/", "a path"), ("?", "options"), ("#", "a fragment")):
        if mark in rest:
            raise InvalidRequest(
                f"{address!r}: {what} in a Redis Cluster address are not supported; "
                f"give {SCHEME}host:port[,host:port...]"
            )
    entries = rest.split(",")
    if len(entries) > MAX_NODES:
        raise InvalidRequest(f"{address!r}: at most {MAX_NODES} seed nodes, not {len(entries)}")
    nodes: list[tuple[str, int]] = []
    for entry in entries:
        node = _node(entry.strip(), address, single=len(entries) == 1)
        if node not in nodes:
            nodes.append(node)
    return ClusterAddress(tuple(nodes))


def _node(entry: str, address: str, single: bool) -> tuple[str, int]:
    if not entry:
        if single:
            return DEFAULT_HOST, DEFAULT_PORT
        raise InvalidRequest(f"{address!r}: an empty node between commas")
    if entry.startswith("["):
        host, bracket, port_text = entry[1:].partition("]")
        if not bracket or not host or not _IPV6.fullmatch(host) or (port_text and not port_text.startswith(":")):
            raise InvalidRequest(f"{address!r}: {entry!r} is not [IPv6 address]:port")
        return host, _port(port_text[1:], entry, address)
    if entry.count(":") > 1:
        raise InvalidRequest(f"{address!r}: write an IPv6 host in brackets, as [{entry}]:{DEFAULT_PORT}")
    host, _colon, port_text = entry.partition(":")
    if host and not _HOSTNAME.fullmatch(host):
        raise InvalidRequest(f"{address!r}: {host!r} is not a host name or IPv4 address")
    return host or DEFAULT_HOST, _port(port_text, entry, address)


def _port(text: str, entry: str, address: str) -> int:
    if not text:
        return DEFAULT_PORT
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= 65535:
        raise InvalidRequest(f"{address!r}: the port of {entry!r} must be 1..65535, not {text!r}")
    return int(text)
