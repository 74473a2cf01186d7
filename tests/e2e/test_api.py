"""The calls only the local engine has, against a real cluster: the shape of `stats()`
(shards, processes, endpoints) and journal rotation. The API both backends share —
single keys, scans, scopes, namespace administration and limits — is tested on both,
through the sync and the asyncio client, in tests/conformance/."""

from __future__ import annotations

import pytest

import kvcluster
from kvcluster import Client, Namespace

pytestmark = pytest.mark.slow


def test_stats_has_the_documented_shape(client: Client, cluster: kvcluster.Cluster) -> None:
    stats = client.stats()
    assert stats["data_dir"] == cluster.data_dir
    assert stats["coordinator"]["pid"] > 0
    assert len(stats["shards"]) == 3
    for shard in stats["shards"]:
        for field in ("id", "pid", "endpoint", "keys", "journal_bytes", "rss_bytes", "cpu_percent", "ops_total"):
            assert field in shard, field
        assert shard["endpoint"].startswith("ipc://")
        assert shard["rss_bytes"] > 0
    assert "default" in stats["namespaces"]


def test_rotate_journals(client: Client, fresh_ns: Namespace) -> None:
    fresh_ns.set("before", 1)
    client.rotate_journals()
    assert fresh_ns.get("before") == 1
    assert all(shard["journal_bytes"] is not None for shard in client.stats()["shards"])
