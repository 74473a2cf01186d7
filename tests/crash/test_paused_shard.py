"""A paused shard (SIGSTOP) gives its clients Timeout — never a miss — within the timeout,
while the other shards keep serving; its late answers never reach the wrong request."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import kvcluster
from kvcluster import Cluster, Timeout
from kvcluster.router.jump import shard_for

pytestmark = [pytest.mark.crash, pytest.mark.slow]

TIMEOUT = 1.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with kvcluster.start(tmp_path / "data", shards=2) as running:
        yield running


def keys_on(shard: int, count: int) -> list[str]:
    found: list[str] = []
    i = 0
    while len(found) < count:
        if shard_for(b"default", f"key-{i}".encode(), 2) == shard:
            found.append(f"key-{i}")
        i += 1
    return found


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_paused_shard_times_out_and_late_answers_are_dropped(cluster: Cluster, kind: str) -> None:
    client = cluster.connect(timeout=TIMEOUT)
    namespace = client.namespace("default")
    paused_keys, live_keys = keys_on(0, 3), keys_on(1, 3)
    for key in paused_keys + live_keys:
        namespace.set(key, key)
    pid = client.stats()["shards"][0]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(Timeout):
            if kind == "sync":
                namespace.get(paused_keys[0])
            else:
                import asyncio

                async def read() -> None:
                    async with kvcluster.AsyncClient(cluster.data_dir, timeout=TIMEOUT) as aio:
                        await (await aio.namespace("default")).get(paused_keys[0])

                asyncio.run(read())
        elapsed = time.monotonic() - started
        assert TIMEOUT * 0.9 <= elapsed <= TIMEOUT * 1.1 + 0.1
        assert [namespace.get(key) for key in live_keys] == live_keys  # the other shard serves
    finally:
        os.kill(pid, signal.SIGCONT)
    # the answer to the timed-out request may arrive now; it must not be taken for these
    assert [namespace.get(key) for key in paused_keys] == paused_keys
