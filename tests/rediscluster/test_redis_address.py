"""Parsing `redis+cluster://` addresses: defaults, IPv6, and clear refusals."""

from __future__ import annotations

import sys
from pathlib import PurePath

import pytest

import kvcluster
from kvcluster import InvalidRequest
from kvcluster.rediscluster.address import ClusterAddress, is_redis_cluster, parse_address


@pytest.mark.parametrize(
    ("address", "nodes"),
    [
        ("redis+cluster://127.0.0.1:7000", (("127.0.0.1", 7000),)),
        ("redis+cluster://a:7000,b:7001, c:7002", (("a", 7000), ("b", 7001), ("c", 7002))),
        ("redis+cluster://", (("127.0.0.1", 6379),)),
        ("redis+cluster://:7000", (("127.0.0.1", 7000),)),
        ("redis+cluster://redis.example.com", (("redis.example.com", 6379),)),
        ("redis+cluster://[::1]:7000,[fe80::1]", (("::1", 7000), ("fe80::1", 6379))),
        ("redis+cluster://h:7000,h:7000/", (("h", 7000),)),
        ("REDIS+CLUSTER://h:1", (("h", 1),)),
    ],
)
def test_good_addresses(address: str, nodes: tuple[tuple[str, int], ...]) -> None:
    assert parse_address(address) == ClusterAddress(nodes)


def test_an_address_prints_in_its_canonical_form() -> None:
    assert str(parse_address("redis+cluster://h:1,[::1]:2")) == "redis+cluster://h:1,[::1]:2"
    assert str(parse_address("redis+cluster://")) == "redis+cluster://127.0.0.1:6379"


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("redis://h:7000", "starts with redis\\+cluster://"),
        ("redis+cluster://h:0", "1..65535"),
        ("redis+cluster://h:65536", "1..65535"),
        ("redis+cluster://h:port", "1..65535"),
        ("redis+cluster://h:\uff17\uff10\uff10\uff10", "1..65535"),  # fullwidth digits
        ("redis+cluster://user:secret@h:7000", "credentials"),
        ("redis+cluster://h:7000/0", "a path"),
        ("redis+cluster://h:7000?timeout=1", "options"),
        ("redis+cluster://a:1,,b:2", "empty node"),
        ("redis+cluster://::1:7000", "IPv6 host in brackets"),
        ("redis+cluster://[::1", "IPv6"),
        ("redis+cluster://[zz]:1", "IPv6"),
        ("redis+cluster://bad_host!:1", "not a host name"),
        ("redis+cluster://" + ",".join(f"h:{i}" for i in range(1, 70)), "at most 64"),
    ],
)
def test_bad_addresses_say_what_is_wrong(address: str, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        parse_address(address)


def test_only_redis_cluster_addresses_go_to_the_backend() -> None:
    assert is_redis_cluster("redis+cluster://h:1") and not is_redis_cluster(PurePath("redis+cluster://h"))
    assert not is_redis_cluster("./kv-data") and not is_redis_cluster("tcp://127.0.0.1:7400")
    assert not is_redis_cluster(7000)


def test_curve_keys_are_refused_for_a_redis_cluster() -> None:
    with pytest.raises(InvalidRequest, match="CURVE"):
        kvcluster.connect("redis+cluster://127.0.0.1:1", key="alice.key_secret")


def test_without_redis_py_connect_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # `import redis` now raises ImportError
    with pytest.raises(InvalidRequest, match=r"pip install 'kvcluster\[redis\]'"):
        kvcluster.connect("redis+cluster://127.0.0.1:1")
