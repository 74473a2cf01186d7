"""Snapshots of a running cluster: one consistent cut across shards while writes go on,
load into another cluster, refusal of damaged files, and autosave (timing, retention,
replacement, and never while a snapshot is being loaded)."""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvtest.waiting import wait_until

import kvcluster
from kvcluster import BatchMode, Client, Cluster, InvalidRequest, NamespaceNotFound, SnapshotError
from kvcluster.codec import Op
from kvcluster.snapshot import open_snapshot, verify_snapshot
from kvcluster.values import unpack_value

pytestmark = pytest.mark.slow

AON = BatchMode.ALL_OR_NOTHING
ACCOUNTS = 20
TOTAL = ACCOUNTS * 100


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with kvcluster.start(tmp_path_factory.mktemp("snapshots"), shards=2, durability="interval") as running:
        yield running


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with cluster.connect(timeout=10.0) as connected:
        yield connected


def rows_of(path: str) -> dict[tuple[str, str], object]:
    with open_snapshot(path) as reader:
        return {(ns.decode(), key.decode()): unpack_value(value) for ns, key, value, _ts in reader}


def test_every_snapshot_taken_during_transfers_keeps_the_sum(client: Client, tmp_path: Path) -> None:
    """Transfers between accounts on both shards are ALL_OR_NOTHING batches; a snapshot
    taken at any moment must hold a constant total, or it is not one cut."""
    bank = client.create_namespace("bank")
    try:
        bank.set_many({f"acct{i}": 100 for i in range(ACCOUNTS)}, AON)
        stop = threading.Event()
        transfers = [0]

        def transfer() -> None:
            with kvcluster.connect(client.target.address) as own:
                accounts = own.namespace("bank")
                i = 0
                while not stop.is_set():
                    a, b = f"acct{i % ACCOUNTS}", f"acct{(i * 7 + 3) % ACCOUNTS}"
                    i += 1
                    if a == b:
                        continue
                    values = accounts.get_many([a, b], AON).data
                    accounts.set_many({a: values[a] - 1, b: values[b] + 1}, AON)
                    transfers[0] += 1

        writer = threading.Thread(target=transfer)
        writer.start()
        try:
            wait_until(lambda: transfers[0] > 20, "transfers started")
            paths = []
            for n in range(20):
                seen = transfers[0] + 10
                wait_until(lambda: transfers[0] >= seen, "transfers between snapshots")  # noqa: B023
                summary = bank.save_snapshot(tmp_path / f"bank-{n}.kvs")
                assert summary["rows"] == ACCOUNTS
                paths.append(summary["path"])
        finally:
            stop.set()
            writer.join()
        cuts = set()
        for path in paths:
            info = verify_snapshot(path)
            cuts.add(info.cut)
            balances = rows_of(path)
            assert sum(balances.values()) == TOTAL, f"{path} is not one cut"  # type: ignore[arg-type]
        assert len(cuts) == len(paths)
    finally:
        client.delete_namespace("bank")


def test_a_snapshot_loads_into_another_cluster_unchanged(client: Client, tmp_path: Path) -> None:
    users = client.create_namespace("snap-users", max_keys=500, max_value_bytes=1 << 10)
    try:
        users.set_many({f"u{i}": {"n": i, "tags": ["a", i]} for i in range(300)}, AON)
        client.namespace("default").set("plain", b"\x00bytes")
        summary = client.save_snapshot(tmp_path / "all.kvs")
        assert summary["rows"] >= 301
        only = users.save_snapshot(tmp_path / "users.kvs")
        assert only["rows"] == 300 and only["namespace"] == "snap-users"
        assert {ns for ns, _key in rows_of(only["path"])} == {"snap-users"}
        expected = users.get_all()
        with kvcluster.start(tmp_path / "other", shards=3) as other:
            target = other.connect()
            loaded = target.load_snapshot(tmp_path / "all.kvs")
            assert loaded["loaded"] == summary["rows"] and loaded["failed"] == 0
            copy = target.namespace("snap-users")
            assert {k: v for k, (v, _ts) in copy.get_all().items()} == {k: v for k, (v, _ts) in expected.items()}
            assert copy.stats()["max_keys"] == 500
            assert target.namespace("default").get("plain") == b"\x00bytes"
            assert target.load_snapshot(tmp_path / "all.kvs")["loaded"] == summary["rows"]  # idempotent
            assert len(copy) == 300
    finally:
        client.delete_namespace("snap-users")


def test_a_damaged_or_foreign_file_is_refused_before_anything_is_written(client: Client, tmp_path: Path) -> None:
    space = client.create_namespace("snap-damage")
    try:
        space.set_many({f"k{i}": i for i in range(50)}, AON)
        path = str(space.save_snapshot(tmp_path / "good.kvs")["path"])
        client.delete_namespace("snap-damage")
        data = bytearray(Path(path).read_bytes())
        data[len(data) // 2] ^= 0x40
        damaged = tmp_path / "damaged.kvs"
        damaged.write_bytes(bytes(data))
        with pytest.raises(SnapshotError):
            client.load_snapshot(damaged)
        foreign = tmp_path / "foreign.kvs"
        foreign.write_text('{"not": "a snapshot"}')
        with pytest.raises(SnapshotError, match="not a kvcluster snapshot"):
            client.load_snapshot(foreign)
        assert "snap-damage" not in client.namespaces()
        client.load_snapshot(path)
        assert len(client.namespace("snap-damage")) == 50
    finally:
        if "snap-damage" in client.namespaces():
            client.delete_namespace("snap-damage")


def test_bad_requests_are_refused(client: Client, tmp_path: Path) -> None:
    with pytest.raises(NamespaceNotFound):
        client.run(client.core.admin(Op.SNAPSHOT, str(tmp_path / "x.kvs"), "no-such-namespace"))
    with pytest.raises(InvalidRequest):
        client.run(client.core.admin(Op.SNAPSHOT, "relative.kvs", None))
    with pytest.raises(InvalidRequest):
        client.set_autosave(0.01, "x-{ts}.kvs")
    with pytest.raises(InvalidRequest):
        client.set_autosave(1, "x-{when}.kvs")
    with pytest.raises(NamespaceNotFound):
        client.set_autosave(1, "x-{ts}.kvs", namespace="no-such-namespace")


def test_autosave_keeps_the_newest_files_and_a_new_task_replaces_the_old(
    client: Client, cluster: Cluster, tmp_path: Path
) -> None:
    space = client.namespace("default")
    pattern = str(tmp_path / "auto-{ns}-{ts}.kvs")
    client.set_autosave(0.2, pattern, keep=2)
    made: set[str] = set()

    def runs() -> int:
        space.set("tick", time.time())  # something new for the next cut
        made.update(glob.glob(str(tmp_path / "auto-all-*.kvs")))
        return len(made)

    wait_until(lambda: runs() >= 5, "five autosaves")
    wait_until(lambda: len(glob.glob(str(tmp_path / "auto-all-*.kvs"))) <= 2, "old autosaves pruned")
    kept = sorted(glob.glob(str(tmp_path / "auto-all-*.kvs")))
    assert kept == sorted(made)[-len(kept) :]
    for path in kept:
        verify_snapshot(path)
    (task,) = client.autosave_tasks()
    assert task["keep"] == 2 and task["last"]["path"] in kept

    client.set_autosave(0.2, str(tmp_path / "second-{ts}.kvs"), keep=0)  # replaces the first
    wait_until(lambda: len(glob.glob(str(tmp_path / "second-*.kvs"))) >= 2, "the new task runs")
    assert len(client.autosave_tasks()) == 1
    before = set(glob.glob(str(tmp_path / "auto-all-*.kvs")))
    wait_until(lambda: len(glob.glob(str(tmp_path / "second-*.kvs"))) >= 4, "the new task runs on")
    assert set(glob.glob(str(tmp_path / "auto-all-*.kvs"))) == before  # the old one stopped
    client.remove_autosave()
    assert client.autosave_tasks() == []


def test_autosave_waits_while_a_snapshot_loads_and_never_overwrites_it(client: Client, tmp_path: Path) -> None:
    source = str(tmp_path / "source.kvs")
    client.namespace("default").set("x", 1)
    client.save_snapshot(source)
    loading = client.core.admin(Op.LOADING, source, 30.0)
    client.run(loading)  # as load_snapshot does while it loads
    try:
        with pytest.raises(InvalidRequest, match="being loaded"):
            client.save_snapshot(source)
        client.set_autosave(0.1, str(tmp_path / "held-{ts}.kvs"))
        wait_until(lambda: client.autosave_tasks()[0]["held_back"] >= 3, "the task held back thrice")
        assert glob.glob(str(tmp_path / "held-*.kvs")) == []
        assert client.autosave_tasks()[0]["last"] is None
    finally:
        client.run(client.core.admin(Op.LOADING, source, 0))
    wait_until(lambda: glob.glob(str(tmp_path / "held-*.kvs")) != [], "autosave after the load")
    client.remove_autosave()
    assert os.path.exists(source)


def test_the_cli_snapshots_loads_and_sets_autosave(cluster: Cluster, client: Client, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    def cli(*args: str) -> str:
        command = [
            os.path.join(os.path.dirname(sys.executable), "kvcluster"),
            *args,
            "--data-dir",
            str(cluster.data_dir),
        ]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout

    client.namespace("default").set("cli-key", "cli-value")
    out = tmp_path / "cli.kvs"
    summary = json.loads(cli("snapshot", "--out", str(out)))
    assert summary["rows"] >= 1 and verify_snapshot(str(out)).rows == summary["rows"]
    client.namespace("default").delete("cli-key")
    assert json.loads(cli("load", str(out)))["failed"] == 0
    assert client.namespace("default").get("cli-key") == "cli-value"
    tasks = json.loads(cli("autosave", "--interval", "60", "--keep", "3"))
    assert tasks[0]["interval"] == 60 and tasks[0]["keep"] == 3
    assert cli("autosave", "--interval", "0").strip() == "removed"
    assert client.autosave_tasks() == []
