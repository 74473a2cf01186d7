"""Snapshots, restores and point-in-time recovery of a loaded cluster, beside redis-server.

One run, same machine, same data set (N keys, ~10-byte keys, ~16-byte values):
  snapshot  kvcluster `save_snapshot` vs `redis-cli --rdb` (both write a file on disk)
  restore   kvcluster `load_snapshot` into a fresh cluster vs redis-server loading that RDB
  latency   p50/p99 of single `set` calls at rest, then while snapshots run back to back
  pitr      `kvcluster.recover` of the whole cluster at "now" into a new data dir
Targets (issue 5): snapshot time <= redis-cli --rdb; p99 during a snapshot <= 5x at rest.

    .venv/bin/python -m bench.snapshot_bench            # 1M keys
    .venv/bin/python -m bench.snapshot_bench --quick    # 100k keys
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import kvcluster
from bench.common import (
    check_target,
    environment,
    make_console,
    percentile,
    redis_server,
    summary,
    write_json,
)
from kvcluster import BatchMode

console = make_console()
CHUNK = 1000


def keys_and_values(n: int) -> tuple[list[str], list[str]]:
    return [f"key:{i:09d}" for i in range(n)], [f"value-{i:010d}" for i in range(n)]


def load_kvcluster(client: kvcluster.Client, keys: list[str], values: list[str]) -> None:
    space = client.namespace("default")
    for start in range(0, len(keys), CHUNK):
        items = dict(zip(keys[start : start + CHUNK], values[start : start + CHUNK], strict=True))
        result = space.set_many(items, BatchMode.BEST_EFFORT)
        if result.errors:
            raise RuntimeError(f"preload failed: {next(iter(result.errors.values()))}")


def load_redis(server: Any, keys: list[str], values: list[str]) -> None:
    pipe = server.client.pipeline(transaction=False)
    for start in range(0, len(keys), CHUNK):
        pipe.mset(dict(zip(keys[start : start + CHUNK], values[start : start + CHUNK], strict=True)))
        if start % (CHUNK * 50) == 0:
            pipe.execute()
    pipe.execute()


def redis_rdb(port: int, path: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["redis-cli", "-p", str(port), "--rdb", path], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def write_latencies(address: str, stop: threading.Event, out: list[float]) -> None:
    with kvcluster.connect(address) as client:
        space = client.namespace("default")
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            space.set(f"latency:{i % 10000}", i)
            out.append(time.perf_counter() - started)
            i += 1


def latency_during(address: str, seconds: float, during: Any = None) -> list[float]:
    """Single-set latencies for `seconds`, or for as long as `during()` runs."""
    stop = threading.Event()
    samples: list[float] = []
    writer = threading.Thread(target=write_latencies, args=(address, stop, samples))
    writer.start()
    try:
        time.sleep(0.2)  # the writer's warm-up: connect and first requests are not measured
        samples.clear()
        if during is None:
            time.sleep(seconds)
        else:
            during()
    finally:
        stop.set()
        writer.join()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100k keys, fewer repeats")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/snapshot.json")
    parser.add_argument("--dir", default=None, help="where the data dirs go (default: a temp dir)")
    args = parser.parse_args(argv)
    n = 100_000 if args.quick else args.keys
    repeats = 2 if args.quick else args.repeats
    env = environment()
    root = tempfile.mkdtemp(prefix="kvc-snapshot-bench-", dir=args.dir)
    results: dict[str, Any] = {"benchmark": "snapshot", "environment": env}
    started = time.perf_counter()
    try:
        keys, values = keys_and_values(n)
        with contextlib.ExitStack() as stack:
            # Without the delay redis waits 5 s for more replicas before streaming an RDB.
            server = stack.enter_context(redis_server(os.path.join(root, "redis"), "--repl-diskless-sync-delay", "0"))
            cluster = stack.enter_context(
                kvcluster.start(os.path.join(root, "kv"), shards=args.shards, durability="interval")
            )
            client = stack.enter_context(cluster.connect(timeout=60.0))
            console.print(f"loading {n:,} keys into kvcluster ({args.shards} shards) and redis-server")
            load_kvcluster(client, keys, values)
            load_redis(server, keys, values)

            console.print("snapshots")
            kv_times, redis_times, fences = [], [], []
            for r in range(repeats):
                path = os.path.join(root, f"kv-{r}.kvs")
                t0 = time.perf_counter()
                taken = client.save_snapshot(path)
                kv_times.append(time.perf_counter() - t0)
                fences.append(taken["fence_ms"])
                redis_times.append(redis_rdb(server.port, os.path.join(root, f"redis-{r}.rdb")))
            snapshot_size = os.path.getsize(os.path.join(root, "kv-0.kvs"))
            rdb_size = os.path.getsize(os.path.join(root, "redis-0.rdb"))

            console.print("write latency at rest, then during back-to-back snapshots")
            address = str(cluster.data_dir)
            rest = latency_during(address, 3.0)
            during_runs: list[float] = []

            def snapshots() -> None:
                for r in range(repeats):
                    t0 = time.perf_counter()
                    client.save_snapshot(os.path.join(root, f"during-{r}.kvs"))
                    during_runs.append(time.perf_counter() - t0)

            during = latency_during(address, 0.0, snapshots)

            console.print("point-in-time recovery of the whole cluster")
            pitr_seconds = None
            recover = getattr(kvcluster, "recover", None)
            if recover is not None:
                t0 = time.perf_counter()
                recover(os.path.join(root, "kv"), at=time.time_ns() // 1000, into=os.path.join(root, "pitr"))
                pitr_seconds = time.perf_counter() - t0
            else:
                console.print("kvcluster.recover is not available in this version: skipped")

        console.print("restores")
        load_times = []
        for r in range(repeats):
            with (
                kvcluster.start(os.path.join(root, f"restore-{r}"), shards=args.shards) as fresh,
                fresh.connect(timeout=60.0) as target,
            ):
                t0 = time.perf_counter()
                target.load_snapshot(os.path.join(root, "kv-0.kvs"))
                load_times.append(time.perf_counter() - t0)
        redis_loads = []
        for r in range(repeats):
            directory = os.path.join(root, f"redis-load-{r}")
            os.makedirs(directory)
            shutil.copy(os.path.join(root, "redis-0.rdb"), os.path.join(directory, "dump.rdb"))
            with redis_server(directory, "--dbfilename", "dump.rdb") as loaded:
                redis_loads.append(loaded.ready_seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    p99_rest, p99_during = percentile(rest, 99), percentile(during, 99)
    snapshot_ratio = summary(kv_times)["median"] / summary(redis_times)["median"]
    results |= {
        "parameters": {"keys": n, "shards": args.shards, "repeats": repeats, "durability": "interval"},
        "snapshot_seconds": {"kvcluster": summary(kv_times), "redis_cli_rdb": summary(redis_times)},
        "snapshot_bytes": {"kvcluster": snapshot_size, "redis_rdb": rdb_size},
        "fence_ms": summary(fences),
        "restore_seconds": {"kvcluster_load_snapshot": summary(load_times), "redis_load_rdb": summary(redis_loads)},
        "pitr_seconds": pitr_seconds,
        "write_latency_us": {
            "rest": {"p50": 1e6 * percentile(rest, 50), "p99": 1e6 * p99_rest, "samples": len(rest)},
            "during_snapshot": {"p50": 1e6 * percentile(during, 50), "p99": 1e6 * p99_during, "samples": len(during)},
            "snapshot_seconds_meanwhile": during_runs,
        },
        "ratios": {
            "snapshot_time_vs_redis_cli_rdb": check_target(snapshot_ratio, 1.0, at_least=False),
            "p99_during_vs_rest": check_target(p99_during / p99_rest, 5.0, at_least=False),
            "restore_vs_redis_rdb_load": {"value": summary(load_times)["median"] / summary(redis_loads)["median"]},
        },
        "elapsed_seconds": time.perf_counter() - started,
    }
    out = write_json(args.out, results)
    png = out.with_suffix(".png")
    plot(png, results)
    for name, ratio in results["ratios"].items():
        console.print(f"{name}: {ratio}")
    console.print(f"wrote {out} and {png}")
    return 0


def plot(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["snapshot\nkvcluster", "snapshot\nredis --rdb", "restore\nkvcluster", "restore\nredis RDB"]
    times = [
        results["snapshot_seconds"]["kvcluster"]["median"],
        results["snapshot_seconds"]["redis_cli_rdb"]["median"],
        results["restore_seconds"]["kvcluster_load_snapshot"]["median"],
        results["restore_seconds"]["redis_load_rdb"]["median"],
    ]
    if results["pitr_seconds"] is not None:
        names.append("PITR\nkvcluster")
        times.append(results["pitr_seconds"])
    left.bar(names, times, color=["tab:blue", "tab:red", "tab:blue", "tab:red", "tab:green"][: len(names)])
    left.set_ylabel("seconds (median)")
    left.set_title(f"{results['parameters']['keys']:,} keys")
    latency = results["write_latency_us"]
    right.bar(
        ["p50 rest", "p50 during", "p99 rest", "p99 during"],
        [
            latency["rest"]["p50"],
            latency["during_snapshot"]["p50"],
            latency["rest"]["p99"],
            latency["during_snapshot"]["p99"],
        ],
        color=["tab:gray", "tab:blue", "tab:gray", "tab:blue"],
    )
    right.set_ylabel("µs per set")
    right.set_title("write latency, at rest and during snapshots")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
