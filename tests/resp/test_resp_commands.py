"""Every command of the gateway through redis-py, sync and asyncio, RESP2 and RESP3."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
from kvtest import LONG
from kvtest.resp import Gateway, call, exchange

from kvcluster import Scope

ROUNDS = 200 if LONG else 8  # pipelines of 200 commands, per protocol


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def r(gateway: Gateway, namespace: str, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """A redis-py client on the test's own namespace, in RESP2 or RESP3."""
    client = gateway.redis(protocol=request.param)
    call(client, "SELECT", namespace)
    yield client
    client.close()


def test_get_set_del_exists(r: redis.Redis) -> None:
    assert r.get("missing") is None
    assert r.set("k", b"\x00binary\xff\r\n") is True
    assert r.get("k") == b"\x00binary\xff\r\n"
    assert r.set("k2", "héllo") is True
    assert r.get("k2") == "héllo".encode()
    assert r.exists("k", "k", "k2", "nope") == 3  # repeats count, as in Redis
    assert r.delete("k", "k", "nope") == 1
    assert r.delete("k2") == 1
    assert r.delete("k2") == 0
    assert r.exists("k2") == 0


def test_mget_mset_getdel(r: redis.Redis) -> None:
    assert r.mset({"a": "1", "b": "2", "c": "3"}) is True
    assert r.mget("a", "missing", "c", "a") == [b"1", None, b"3", b"1"]
    assert r.mget("b") == [b"2"]
    assert r.getdel("b") == b"2"
    assert r.getdel("b") is None
    assert r.dbsize() == 2


def test_set_options(r: redis.Redis) -> None:
    assert r.set("x", "1", xx=True) is None  # XX on a missing key: not set
    assert r.get("x") is None
    r.set("x", "1")
    assert r.set("x", "2", xx=True) is True
    assert r.set("x", "3", xx=True, get=True) == b"2"  # atomic: the old value of the replaced key
    assert r.set("x", "4", keepttl=True) is True  # no key has a TTL: keeping it is plain SET
    assert r.get("x") == b"4"
    for options, refused in (
        ({"ex": 10}, "'EX'"),
        ({"px": 10}, "'PX'"),
        ({"nx": True}, "'NX'"),
        ({"get": True}, "GET"),
    ):
        with pytest.raises(redis.ResponseError, match=refused):
            r.set("x", "5", **options)
    with pytest.raises(redis.ResponseError, match="syntax error"):
        call(r, "SET", "x", "5", "BOGUS")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        call(r, "SET", "x", "5", "XX", "XX")
    assert r.get("x") == b"4"


def test_keys_and_scan(r: redis.Redis) -> None:
    names = [f"user:{i}" for i in range(150)] + ["other", "user:x?"]
    r.mset(dict.fromkeys(names, "v"))
    assert sorted(r.keys("user:1?")) == sorted(f"user:1{i}".encode() for i in range(10))
    assert r.keys("other") == [b"other"]
    assert r.keys("nothing") == []
    assert r.keys("user:x\\?") == [b"user:x?"]
    assert sorted(r.scan_iter(count=7)) == sorted(n.encode() for n in names)
    assert sorted(r.scan_iter(match="user:?", count=1000)) == sorted(f"user:{i}".encode() for i in range(10))
    cursor, page = r.scan(0, count=5)
    assert cursor != 0 and len(page) == 5
    with pytest.raises(redis.ResponseError, match="unknown or expired"):
        r.scan(987654321)
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        call(r, "SCAN", "-1")
    with pytest.raises(redis.ResponseError, match="TYPE"):
        r.scan(0, _type="string")


def test_select_chooses_the_namespace(gateway: Gateway, namespace: str) -> None:
    r = gateway.redis(protocol=2)
    with gateway.cluster.connect() as client:
        client.create_namespace("7")
        try:
            r.select(7)  # SELECT n: the namespace named "n"
            r.set("where", "seven")
            r.select(0)  # SELECT 0: "default"
            r.set("where", "default")
            call(r, "SELECT", namespace)  # SELECT name
            r.set("where", "mine")
            assert client.namespace("7").get("where") == b"seven"
            assert client.namespace("default").get("where") == b"default"
            assert client.namespace(namespace).get("where") == b"mine"
            with pytest.raises(redis.ResponseError, match="DB index is out of range"):
                r.select(8)
            with pytest.raises(redis.ResponseError, match="DB index is out of range"):
                call(r, "SELECT", "no-such-namespace")
            assert r.get("where") == b"mine"  # a failed SELECT keeps the namespace
            assert r.info("keyspace")["db7"] == {"keys": 1, "expires": 0, "avg_ttl": 0, "namespace": 7}
        finally:
            client.namespace("default").delete("where")
            client.delete_namespace("7")
        r.close()


def test_values_written_by_python_read_by_type(r: redis.Redis, gateway: Gateway, namespace: str) -> None:
    with gateway.cluster.connect() as client:
        ns = client.namespace(namespace)
        ns.set("bytes", b"\x01")
        ns.set("str", "tëxt")
        ns.set("int", -42)
        ns.set("float", 2.5)
        ns.set("dict", {"a": 1})
        ns.set("none", None, scope=Scope.EPHEMERAL)
        assert r.get("bytes") == b"\x01"
        assert r.get("str") == "tëxt".encode()
        assert r.get("int") == b"-42"
        assert r.get("float") == b"2.5"
        for key in ("dict", "none"):
            with pytest.raises(redis.ResponseError, match=r"WRONGTYPE.*Python client"):
                r.get(key)
        assert r.mget("int", "dict") == [b"-42", None]  # MGET: nil for another type, as Redis
        r.set("from-redis", "v")
        assert ns.get("from-redis") == b"v"  # what the gateway writes is bytes


def test_keys_must_be_utf8_and_short(r: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="not valid UTF-8"):
        r.set(b"\xff\xfe", "v")
    with pytest.raises(redis.ResponseError, match=r"1\.\.1024 bytes"):
        r.set("k" * 1025, "v")
    with pytest.raises(redis.ResponseError, match=r"1\.\.1024 bytes"):
        r.get("")


def test_cluster_errors_become_redis_errors(r: redis.Redis, gateway: Gateway, namespace: str) -> None:
    with gateway.cluster.connect() as client:
        client.update_namespace(namespace, max_keys=2, max_value_bytes=100)
    r.set("a", "1")
    r.set("b", "2")
    with pytest.raises(redis.exceptions.OutOfMemoryError, match="max_keys=2"):  # -OOM ...
        r.set("c", "3")
    r.set("a", "replaced")  # an existing key may still change
    with pytest.raises(redis.ResponseError, match="value too large"):
        r.set("a", "x" * 200)
    with pytest.raises(redis.exceptions.OutOfMemoryError, match="batch not applied"):
        r.mset({"c": "3", "d": "4"})
    assert r.exists("c", "d") == 0  # MSET is all or nothing


def test_connection_commands(r: redis.Redis) -> None:
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.client_setname("tester") is True
    assert r.client_getname() in (b"tester", "tester")
    assert isinstance(r.client_id(), int)
    assert b"name=tester" in call(r, "CLIENT", "INFO")
    with pytest.raises(redis.ResponseError, match="cannot contain spaces"):
        r.client_setname("two words")
    with pytest.raises(redis.ResponseError, match="unknown subcommand 'BOGUS'"):
        call(r, "CLIENT", "BOGUS")
    with pytest.raises(redis.ResponseError, match="no users or passwords"):
        call(r, "AUTH", "secret")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get' command"):
        call(r, "GET")
    with pytest.raises(redis.ResponseError) as unknown:
        call(r, "FLUSHALL", "ASYNC", "x")
    assert str(unknown.value) == "unknown command 'FLUSHALL', with args beginning with: 'ASYNC' 'x' "


def test_hello_switches_the_protocol(gateway: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        assert exchange(sock, b"HELLO\r\n", b"modules\r\n*0\r\n").startswith(b"*14\r\n")  # RESP2: flat
        assert exchange(sock, b"GET missing\r\n", b"\r\n") == b"$-1\r\n"
        reply = exchange(sock, b"HELLO 3 SETNAME raw\r\n", b"modules\r\n*0\r\n")
        assert reply.startswith(b"%7\r\n") and b"$5\r\nproto\r\n:3\r\n" in reply  # RESP3: a map
        assert exchange(sock, b"GET missing\r\n", b"\r\n") == b"_\r\n"
        assert exchange(sock, b"HELLO 4\r\n", b"\r\n") == b"-NOPROTO unsupported protocol version\r\n"
        assert exchange(sock, b"HELLO 3 AUTH default pw\r\n", b"\r\n").startswith(b"-ERR AUTH is not available")
        assert exchange(sock, b"CLIENT GETNAME\r\n", b"raw\r\n") == b"$3\r\nraw\r\n"
        assert exchange(sock, b"HELLO 2\r\n", b"modules\r\n*0\r\n").startswith(b"*14\r\n")
        assert exchange(sock, b"PING msg\r\n", b"msg\r\n") == b"$3\r\nmsg\r\n"
        docs = exchange(sock, b"COMMAND DOCS get\r\n", b"type\r\n$3\r\nkey\r\n")
        assert docs.startswith(b"*2\r\n$3\r\nget\r\n*10\r\n$7\r\nsummary\r\n")


def test_info_command_and_config(r: redis.Redis, gateway: Gateway) -> None:
    info = r.info()
    assert info["redis_version"] == "7.0.0"
    assert info["kvcluster_shards"] == 2
    assert info["connected_clients"] >= 1
    assert info["tcp_port"] == gateway.port
    assert r.info("clients")["maxclients"] > 1000
    assert r.command_count() > 15
    assert len(r.command()) == r.command_count()
    assert r.command()["get"]["arity"] == 2
    assert r.config_get("save") == {"save": ""}
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert r.config_get("append*") == {"appendonly": "yes", "appendfsync": "no"}  # durability none
    with pytest.raises(redis.ResponseError, match="not supported"):
        r.config_set("save", "")


def test_pipelined_requests_keep_their_order(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.set("counter", str(i))
        pipe.get("counter")
        if i % 50 == 0:
            pipe.mset({"m1": str(i), "m2": str(i)})
            pipe.mget("m1", "m2", "counter")
            pipe.dbsize()
    results = pipe.execute()
    gets = [v for v in results if isinstance(v, bytes)]
    assert gets == [str(i).encode() for i in range(300)]
    mgets = [v for v in results if isinstance(v, list)]
    assert mgets == [[str(i).encode()] * 3 for i in range(0, 300, 50)]
    assert r.get("counter") == b"299"


def test_asyncio_clients_in_both_protocols(gateway: Gateway) -> None:
    with gateway.cluster.connect() as cluster_client:
        cluster_client.create_namespace("42")  # each pooled connection sends SELECT 42 (db=42)
        try:

            async def main() -> None:
                for protocol in (2, 3):
                    client = redis.asyncio.Redis(host="127.0.0.1", port=gateway.port, db=42, protocol=protocol)
                    await asyncio.gather(*(client.set(f"a{i}", str(i)) for i in range(100)))
                    values = await asyncio.gather(*(client.get(f"a{i}") for i in range(100)))
                    assert values == [str(i).encode() for i in range(100)]
                    assert await client.dbsize() == 100
                    await client.aclose()

            asyncio.run(main())
            assert cluster_client.namespace("42").get("a7") == b"7"
        finally:
            cluster_client.delete_namespace("42")


@pytest.mark.parametrize("protocol", [2, 3])
def test_random_pipelines_answer_as_redis_server_does(
    gateway: Gateway, namespace: str, redis_server: redis.Redis, protocol: int
) -> None:
    """The same pipelines of mixed commands on few keys, sent to redis-server and to the
    gateway: every reply the same, in the same order (order matters: the keys repeat)."""
    draw = random.Random(protocol)
    keys = ["a", "b", "c"]

    def command() -> list[str]:
        kind = draw.choice(["get", "set", "setxx", "setxxget", "getdel", "del", "exists", "mget", "mset", "dbsize"])
        some = [draw.choice(keys) for _ in range(draw.randint(1, 3))]
        value = str(draw.randint(0, 99))
        return {
            "get": ["GET", some[0]],
            "set": ["SET", some[0], value],
            "setxx": ["SET", some[0], value, "XX"],
            "setxxget": ["SET", some[0], value, "XX", "GET"],
            "getdel": ["GETDEL", some[0]],
            "del": ["DEL", *some],
            "exists": ["EXISTS", *some],
            "mget": ["MGET", *some],
            "mset": ["MSET", *[arg for key in some for arg in (key, value)]],
            "dbsize": ["DBSIZE"],
        }[kind]

    ours = gateway.redis(protocol=protocol)
    call(ours, "SELECT", namespace)
    theirs = redis.Redis(port=redis_server.connection_pool.connection_kwargs["port"], protocol=protocol)
    theirs.flushall()
    for _ in range(ROUNDS):
        pipeline = [command() for _ in range(200)]
        answers = []
        for client in (theirs, ours):
            pipe = client.pipeline(transaction=False)
            for args in pipeline:
                pipe.execute_command(*args)  # type: ignore[no-untyped-call]
            answers.append(pipe.execute(raise_on_error=False))
        for i, (args, want, got) in enumerate(zip(pipeline, *answers, strict=True)):
            assert want == got, (i, args, want, got, pipeline[max(0, i - 12) : i])
    ours.close()
    theirs.close()
