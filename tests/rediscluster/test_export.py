"""`kvcluster export`: a real local cluster (and its snapshot) copied into a real Redis
Cluster, through the library function and the CLI; every value and timestamp checked
through `kvcluster.connect("redis+cluster://...")`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import kvcluster
from kvcluster import Scope
from kvcluster.cli import main
from kvcluster.errors import InvalidRequest, NamespaceNotFound, SnapshotError
from kvcluster.rediscluster.layout import counter_key
from kvcluster.rediscluster.migrate import export
from kvcluster.rediscluster.plans import Command, single
from kvcluster.values import pack_value

USERS, MISC, BULK = "xp-users", "xp-misc", "xp-bulk"
LIMITS = {
    USERS: {"max_keys": 100, "max_value_bytes": 4096},
    MISC: {"max_keys": 0, "max_value_bytes": 0},
    BULK: {"max_keys": 3000, "max_value_bytes": 0},  # more keys than one chunk (CHUNK_KEYS)
}
VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "int": 42,
    "big": 2**63 - 1,
    "negative": -(2**40),
    "float": 3.25,
    "str": "héllo wörld ✓",
    "bytes": b"\x00\x01\xff",
    "list": [1, "two", [3.0, None]],
    "dict": {"name": "Alice", "tags": ["a", "b"], "nested": {"x": b"y"}},
    "key|with|bars": "bars",
    "cart:{42}:items": [1, 2],
    "ключ": "unicode key",
}
EPHEMERAL = {"token-1": b"secret", "token-2": {"session": 7}}
CONTENT: dict[str, dict[str, Any]] = {
    USERS: VALUES,
    MISC: VALUES,
    BULK: {f"k:{i}": {"i": i, "pad": "x" * (i % 50)} for i in range(2500)},
}
ALL = sum(len(items) for items in CONTENT.values())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kvcluster.Cluster]:
    """A 2-shard cluster holding two namespaces with limits, many value types, and
    ephemeral keys (in USERS)."""
    with kvcluster.start(tmp_path_factory.mktemp("export-source"), shards=2, durability="none") as running:
        with running.connect() as client:
            for name, limits in LIMITS.items():
                space = client.create_namespace(name, **limits)
                space.set_many(CONTENT[name])
            space = client.namespace(USERS)
            for key, value in EPHEMERAL.items():
                space.set(key, value, scope=Scope.EPHEMERAL)
        yield running


@pytest.fixture
def target(redis_cluster: str) -> Iterator[Any]:
    """A client of the shared Redis Cluster; the namespaces these tests use are removed
    before and after each test (other tests share that cluster)."""
    with kvcluster.connect(redis_cluster) as client:
        _drop(client)
        yield client
        _drop(client)


def _drop(client: Any) -> None:
    for name in LIMITS:
        if name in client.namespaces():
            client.delete_namespace(name)


def _check_copied(local: Any, redis: Any) -> None:
    """Every permanent key of the source is on the target with its value and timestamp;
    no ephemeral key is; limits are the source's."""
    for name, limits in LIMITS.items():
        there = redis.namespace(name)
        copied = there.get_all()  # {key: (value, timestamp)}
        here = local.namespace(name).get_all(scope=Scope.PERMANENT)
        assert copied == here and len(here) == len(CONTENT[name])
        for key in list(here)[:50]:
            assert there.get_versioned(key) == local.namespace(name).get_versioned(key)
        stats = there.stats()
        assert {limit: stats[limit] for limit in limits} == limits
        assert not any(there.exists(key) for key in EPHEMERAL)
        if limits["max_keys"]:
            counter = redis.run(single(Command(("GET", counter_key(name.encode())))))
            assert int(counter) == len(CONTENT[name])


def test_export_copies_values_and_timestamps_and_is_idempotent(source: kvcluster.Cluster, target: Any) -> None:
    seen: list[tuple[str, int, int | None]] = []
    with source.connect() as local:
        report = export(
            source.data_dir,
            target.address,
            namespaces=list(LIMITS),
            progress=lambda ns, done, total: seen.append((ns, done, total)),
        )
        assert [(ns.name, ns.target, ns.created, ns.kept) for ns in report.namespaces] == [
            (name, "created", len(CONTENT[name]), 0) for name in LIMITS
        ]
        assert report.keys == report.written == ALL and report.failed == 0
        assert report.skipped_ephemeral == len(EPHEMERAL) and report.namespaces[0].counted == len(VALUES)
        assert report.bytes == sum(len(pack_value(v)) for items in CONTENT.values() for v in items.values())
        assert (USERS, len(VALUES) + len(EPHEMERAL), len(VALUES) + len(EPHEMERAL)) in seen
        bulk = [done for ns, done, _total in seen if ns == BULK]  # chunk by chunk (a chunk may span namespaces)
        assert bulk == sorted(bulk) and bulk[0] == 0 and bulk[-1] == 2500 and len(bulk) >= 4
        _check_copied(local, target)

        target.run(single(Command(("SET", counter_key(BULK.encode()), 7))))  # as an interrupted export may leave it
        again = export(local, target.address, namespaces=list(LIMITS))  # a connected Client works too
        assert [ns.target for ns in again.namespaces] == ["reused"] * len(LIMITS)
        assert again.written == 0 and again.kept == ALL
        _check_copied(local, target)

        # The newer record wins, either way round.
        newer_there = target.namespace(MISC).set("int", "written on the target")
        local.namespace(MISC).set("str", "written at the source")
        third = export(local, target.address, namespaces=[MISC])
        assert (third.written, third.kept, third.namespaces[0].replaced) == (1, len(VALUES) - 1, 1)
        assert target.namespace(MISC).get_versioned("int") == ("written on the target", newer_there)
        assert target.namespace(MISC).get_versioned("str") == local.namespace(MISC).get_versioned("str")
        local.namespace(MISC).set("str", VALUES["str"])


def test_export_from_a_snapshot(source: kvcluster.Cluster, target: Any, tmp_path: Path) -> None:
    path = tmp_path / "all.kvs"
    with source.connect() as local:
        local.save_snapshot(path)
        report = export(path, target.address, namespaces=list(LIMITS))
        assert report.written == ALL and report.skipped_ephemeral == 0
        _check_copied(local, target)


def test_refusals(source: kvcluster.Cluster, target: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="redis\\+cluster://"):
        export(source.data_dir, "tcp://127.0.0.1:1")
    with pytest.raises(NamespaceNotFound, match="'nope' is not in the source"):
        export(source.data_dir, target.address, namespaces=["nope"])
    not_a_snapshot = tmp_path / "junk.kvs"
    not_a_snapshot.write_bytes(b"not a snapshot at all" * 10)
    with pytest.raises(SnapshotError):
        export(not_a_snapshot, target.address)
    target.create_namespace(MISC)
    target.run(single(Command(("SET", b"kv|xp-misc|int", b"junk"))))  # not a kvcluster record
    report = export(source.data_dir, target.address, namespaces=[MISC])
    assert (report.failed, report.written) == (1, len(VALUES) - 1) and "'int'" in report.namespaces[0].errors[0]
    target.delete_namespace(MISC)
    target.create_namespace(USERS, max_keys=5)
    with pytest.raises(InvalidRequest, match="other limits: 'xp-users' has max_keys=5"):
        export(source.data_dir, target.address, namespaces=[USERS, MISC])
    assert MISC not in target.namespaces()  # nothing was written


def test_cli(source: kvcluster.Cluster, target: Any, tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(main, ["export", "--to", target.address, *args], catch_exceptions=False)

    done = run("--data-dir", source.data_dir, "--namespace", USERS, "--namespace", MISC, "--namespace", BULK, "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert (report["written"], report["skipped_ephemeral"]) == (ALL, len(EPHEMERAL))
    with source.connect() as local:
        _check_copied(local, target)

    table = run("--data-dir", source.data_dir)  # every namespace ("default" is empty): all kept
    assert table.exit_code == 0, table.output
    assert f"{ALL:,} keys (0 written, {ALL:,} kept" in table.stdout
    assert "ephemeral keys skipped" in table.stdout

    target.update_namespace(USERS, max_keys=50)
    refused = run("--data-dir", source.data_dir, "--namespace", USERS)
    assert refused.exit_code == 1 and "InvalidRequest" in refused.output and "--force" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    forced = run("--data-dir", source.data_dir, "--namespace", USERS, "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["namespaces"][0]["target"] == "forced"
    assert target.namespace(USERS).stats()["max_keys"] == 50

    usage = [
        runner.invoke(main, ["export", "--to", "redis://127.0.0.1:7000", "--data-dir", source.data_dir]),
        runner.invoke(main, ["export", "--to", "redis+cluster://h:99999", "--data-dir", source.data_dir]),
        run("--snapshot", str(tmp_path / "missing.kvs")),
        run("--data-dir", str(tmp_path / "no-such-dir")),
        run("--data-dir", source.data_dir, "--snapshot", __file__),
    ]
    for result in usage:
        assert result.exit_code == 2, result.output
