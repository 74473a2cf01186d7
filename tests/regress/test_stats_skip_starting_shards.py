"""Regression: right after a shard died, `client.stats()`, `namespace()` and
`Namespace.stats()` asked its not-yet-ready successor too, and waited out the 2 s
timeout for an answer that could not come (found by the soak). They now answer at once,
showing the restarting shard as not ready."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from kvtest.waiting import wait_until

import kvcluster


def test_stats_answer_while_a_shard_restarts(tmp_path: Path) -> None:
    with kvcluster.start(tmp_path / "data", shards=2) as cluster, cluster.connect(timeout=10.0) as client:
        victim = client.stats()["shards"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        seen: list[tuple[int | None, bool]] = []

        def successor_seen() -> bool:
            shard = client.stats()["shards"][0]
            seen.append((shard["pid"], shard["ready"]))
            return shard["pid"] not in (None, victim)

        wait_until(successor_seen, "the successor in the stats")
        # Answered while it was still starting: before the fix each answer came only
        # after the starting shard's 2 s timeout, by when it had long been ready.
        assert seen[-1][1] is False, seen[-5:]
        client.namespace("default").set("after", 1)
        wait_until(lambda: client.stats()["shards"][0]["ready"], "the successor ready")
