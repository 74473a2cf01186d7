"""Memory per key and recovery time of a 1M-key shard, beside redis-server.

Run from the repository root:

    .venv/bin/python -m bench.memory_bench              # 1M keys, ~1 minute
    .venv/bin/python -m bench.memory_bench --keys 100000  # smaller, for a smoke run

Both stores get the same keys (`key:%07d`) with 100-byte string values, written in
batches of 1,000 (kvcluster `set_many`, redis MSET). Memory per key is the growth of
the shard process's RSS (psutil, via `stats()`) over the keys written, beside redis's
`used_memory` growth (its allocator's count) and its RSS growth; kvcluster's shard
keeps each key's value and timestamp in a Python dict. Recovery: the shard is killed
with SIGKILL and timed until a read is answered again by its replacement (the
coordinator restarts it; it replays its journal); redis-server (appendonly, fsync
everysec) is stopped and timed from start until it has loaded its AOF. Results:
bench/results/memory.json and memory.png.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import kvcluster
from bench.common import (
    check_target,
    environment,
    exit_on_sigterm,
    filesystem_of,
    make_console,
    print_ratios,
    print_table,
    progress,
    redis_info,
    redis_server,
    save_results,
)
from kvcluster.errors import KVError

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "memory.json"
VALUE_BYTES = 100
BATCH = 1000
REDIS_ARGS = ("--appendonly", "yes", "--appendfsync", "everysec", "--aof-use-rdb-preamble", "no")
READY_TIMEOUT = 300.0

console = make_console()


def batches(keys: int) -> list[tuple[list[str], list[str]]]:
    out = []
    for lo in range(0, keys, BATCH):
        hi = min(keys, lo + BATCH)
        out.append(
            ([f"key:{i:07d}" for i in range(lo, hi)], [f"{i:08d}".ljust(VALUE_BYTES, "v") for i in range(lo, hi)])
        )
    return out


def shard_info(client: kvcluster.Client) -> dict[str, Any]:
    """The shard's stats, with its anonymous memory: RSS also counts the pages of the
    journal's file mapping, which are page cache (shared, reclaimable), not the heap."""
    shard: dict[str, Any] = client.stats()["shards"][0]
    shard["anon_bytes"] = anonymous_memory(shard["pid"]) if shard.get("pid") else None
    return shard


def anonymous_memory(pid: int) -> int:
    """RssAnon of a process, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no RssAnon in /proc/{pid}/status")


def measure_kvcluster(root: str, keys: int) -> dict[str, Any]:
    with kvcluster.start(os.path.join(root, "kv"), shards=1) as cluster, cluster.connect() as client:
        ns = client.namespace("default")
        first = shard_info(client)
        before, anon_before = first["rss_bytes"], first["anon_bytes"]
        progress(f"kvcluster: writing {keys:,} keys")
        t0 = time.perf_counter()
        for ks, vs in batches(keys):
            ns.set_many(dict(zip(ks, vs, strict=True)))
        load_seconds = time.perf_counter() - t0
        info = shard_info(client)
        after = info["rss_bytes"]
        progress(f"kvcluster: killing the shard (pid {info['pid']}) and timing its recovery")
        probe = f"key:{keys - 1:07d}"
        t0 = time.perf_counter()
        os.kill(info["pid"], signal.SIGKILL)
        recovery = wait_for_read(client, ns, probe, info["pid"], t0)
        recovered = shard_info(client)
        return {
            "keys": len(ns),
            "rss_before": before,
            "rss_after": after,
            "rss_bytes_per_key": (after - before) / keys,
            "anon_before": anon_before,
            "anon_after": info["anon_bytes"],
            "bytes_per_key": (info["anon_bytes"] - anon_before) / keys,
            "rss_after_recovery": recovered["rss_bytes"],
            "anon_after_recovery": recovered["anon_bytes"],
            "bytes_per_key_after_recovery": (recovered["anon_bytes"] - anon_before) / keys,
            "journal_bytes": recovered.get("journal_bytes"),
            "load_seconds": load_seconds,
            "recovery_seconds": recovery,
        }


def wait_for_read(client: kvcluster.Client, ns: kvcluster.Namespace, probe: str, old_pid: int, t0: float) -> float:
    """Seconds from the kill until a read is answered by a shard process that is not the
    killed one (a read that raced the kill could still be answered by it)."""
    deadline = t0 + READY_TIMEOUT
    while time.perf_counter() < deadline:
        with contextlib.suppress(KVError):
            if ns.get(probe) is not None and shard_info(client)["pid"] not in (None, old_pid):
                return time.perf_counter() - t0
    raise TimeoutError(f"the shard did not serve again within {READY_TIMEOUT} s")


def measure_redis(root: str, keys: int) -> dict[str, Any]:
    directory = os.path.join(root, "redis")
    with redis_server(directory, *REDIS_ARGS) as server:
        r = server.client
        memory_before = redis_info(r, "memory")
        progress(f"redis: writing {keys:,} keys")
        t0 = time.perf_counter()
        for ks, vs in batches(keys):
            r.mset(dict(zip(ks, vs, strict=True)))
        load_seconds = time.perf_counter() - t0
        memory_after = redis_info(r, "memory")
        r.config_set("appendfsync", "always")  # the next write waits for the file
        r.set("flush", "1")
    progress("redis: restarting and timing the AOF load")
    with redis_server(directory, *REDIS_ARGS) as server:
        recovery = server.ready_seconds
        loaded = server.client.dbsize()
    used = memory_after["used_memory"] - memory_before["used_memory"]
    rss = memory_after["used_memory_rss"] - memory_before["used_memory_rss"]
    return {
        "keys": loaded - 1,
        "used_memory_before": memory_before["used_memory"],
        "used_memory_after": memory_after["used_memory"],
        "rss_before": memory_before["used_memory_rss"],
        "rss_after": memory_after["used_memory_rss"],
        "used_memory_per_key": used / keys,
        "rss_per_key": rss / keys,
        "aof_bytes": sum(f.stat().st_size for f in Path(directory).rglob("*.aof")),
        "load_seconds": load_seconds,
        "recovery_seconds": recovery,
    }


def plot(path: Path, results: dict[str, Any]) -> None:
    kv, rd = results["kvcluster"], results["redis"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    labels = ["kvcluster shard\nanonymous", "kvcluster shard\nRSS (+ journal map)", "redis\nused_memory", "redis\nRSS"]
    heights = [kv["bytes_per_key"], kv["rss_bytes_per_key"], rd["used_memory_per_key"], rd["rss_per_key"]]
    left.bar(labels, heights, color=["C0", "C9", "C3", "C1"])
    left.set_ylabel("bytes per key")
    left.set_title(f"memory, {results['parameters']['keys']:,} keys of {VALUE_BYTES}-byte values")
    right.bar(
        ["kvcluster shard\n(kill -9, restart)", "redis-server\n(restart, AOF)"],
        [kv["recovery_seconds"], rd["recovery_seconds"]],
        color=["C0", "C3"],
    )
    right.set_ylabel("seconds until serving")
    right.set_title("recovery")
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON path; the PNG goes beside it")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="kv-memory-bench-") as root:
        results: dict[str, Any] = {
            "benchmark": "memory",
            "environment": environment(),
            "filesystem": filesystem_of(root),
            "parameters": {"keys": args.keys, "value_bytes": VALUE_BYTES, "batch": BATCH, "redis_args": REDIS_ARGS},
            "kvcluster": measure_kvcluster(root, args.keys),
            "redis": measure_redis(root, args.keys),
        }
    kv, rd = results["kvcluster"], results["redis"]
    results["ratios"] = {
        "memory per key, kvcluster shard anonymous ÷ redis used_memory": check_target(
            kv["bytes_per_key"] / rd["used_memory_per_key"], 2.0, at_least=False
        ),
        "memory per key, kvcluster shard anonymous ÷ redis RSS": check_target(kv["bytes_per_key"] / rd["rss_per_key"]),
        "memory per key, kvcluster shard RSS ÷ redis RSS": check_target(kv["rss_bytes_per_key"] / rd["rss_per_key"]),
        "recovery, kvcluster shard ÷ redis AOF load (time)": check_target(
            kv["recovery_seconds"] / rd["recovery_seconds"]
        ),
    }
    print_table(
        f"{args.keys:,} keys of {VALUE_BYTES}-byte values",
        ["", "kvcluster (1 shard)", "redis-server"],
        [
            [
                "bytes per key: heap (shard RssAnon / redis used_memory)",
                f"{kv['bytes_per_key']:.0f}",
                f"{rd['used_memory_per_key']:.0f}",
            ],
            ["bytes per key: RSS growth", f"{kv['rss_bytes_per_key']:.0f}", f"{rd['rss_per_key']:.0f}"],
            ["bytes per key: heap after recovery", f"{kv['bytes_per_key_after_recovery']:.0f}", None],
            ["file on disk (MB)", f"{(kv['journal_bytes'] or 0) / 1e6:.1f}", f"{rd['aof_bytes'] / 1e6:.1f}"],
            ["write time (s, batches of 1,000)", f"{kv['load_seconds']:.2f}", f"{rd['load_seconds']:.2f}"],
            ["recovery (s)", f"{kv['recovery_seconds']:.2f}", f"{rd['recovery_seconds']:.2f}"],
        ],
        console,
    )
    print_ratios(results["ratios"], console)
    save_results(args.out, results, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
