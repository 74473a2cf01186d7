"""Proxies handed to other processes: multiprocess.Pool workers (spawn and fork), and a
client used after fork(), which must never touch its parent's sockets."""

from __future__ import annotations

import os
import pickle

import multiprocess
import pytest
from kvtest.workers import read_keys, write_range

from kvcluster import Client, Namespace

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_pool_of_workers_writes_through_pickled_proxies(fresh_ns: Namespace, method: str) -> None:
    context = multiprocess.get_context(method)
    with context.Pool(3) as pool:
        written = pool.map(write_range, [(fresh_ns, i * 100, (i + 1) * 100) for i in range(6)])
    stamps = dict(pair for chunk in written for pair in chunk)
    assert len(stamps) == 600
    assert len(fresh_ns) == 600
    versions = {key: fresh_ns.get_versioned(key) for key in stamps}
    assert all(found is not None and found[1] == stamps[key] for key, found in versions.items())
    writers = {found[0]["pid"] for found in versions.values() if found is not None}
    assert os.getpid() not in writers
    assert len(writers) >= 2


def test_pickled_namespace_reads_in_a_spawned_worker(fresh_ns: Namespace) -> None:
    fresh_ns.set("a", 1)
    fresh_ns.set("b", [2])
    with multiprocess.get_context("spawn").Pool(1) as pool:
        assert pool.apply(read_keys, ((fresh_ns, ["a", "b", "c"]),)) == {"a": 1, "b": [2], "c": None}


def test_a_namespace_pickles_as_its_address(fresh_ns: Namespace) -> None:
    data = pickle.dumps(fresh_ns)
    assert len(data) < 400  # the address and the name, no sockets
    copy = pickle.loads(data)
    fresh_ns.set("x", 1)
    assert copy.get("x") == 1
    assert copy.client is not fresh_ns.client


def test_client_used_after_fork_builds_its_own_sockets(client: Client, fresh_ns: Namespace) -> None:
    fresh_ns.set("before", 1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: uses the inherited proxy, which must reconnect by itself
        try:
            fresh_ns.set("from-child", os.getpid())
            ok = fresh_ns.get("before") == 1
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 10) == b"ok"
    assert status == 0
    fresh_ns.set("after", 2)  # the parent's sockets still work: the child never touched them
    assert fresh_ns.get("from-child") == pid
    assert fresh_ns.get("after") == 2
