"""redis-benchmark against redis-server and against kvcluster's RESP gateway, side by side.

    python -m bench.resp_bench [--quick] [--out bench/results/resp.json]
    python -m bench resp                      # the same, from the suite

The same redis-benchmark runs (GET and SET of 3-byte values over 100,000 random keys,
`-t get,set -r 100000`) go to each peer, one after the other, for each pipeline depth
(`-P 1`, `-P 16`) and client count (`-c`):

  redis     redis-server started here on a free loopback port, `--save '' --appendonly no`
  gateway   a kvcluster (one shard per core, durability `none`: a write is acknowledged
            once it is in its shard's memory-mapped journal) with its RESP gateway

Reported: requests/s of each (the median of the rounds), and gateway / redis. The
gateway is one Python process between redis-benchmark and the shards, so the ratio is
the price of speaking RESP through it, not of kvcluster's own client (see ops_bench).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import kvcluster
from bench.common import (
    check_target,
    environment,
    exit_on_sigterm,
    free_port,
    make_console,
    median,
    print_ratios,
    print_table,
    progress,
    redis_server,
    save_results,
)

console = make_console()
KEYSPACE = 100_000  # -r: random keys drawn from this many
TESTS = ("set", "get")
PEERS = ("redis", "gateway")


def redis_benchmark(port: int, test: str, requests: int, clients: int, pipeline: int) -> dict[str, float]:
    """One redis-benchmark run of one test: its requests/s and latencies (ms)."""
    command = ["redis-benchmark", "-p", str(port), "-t", test, "-n", str(requests), "-c", str(clients)]
    command += ["-P", str(pipeline), "-r", str(KEYSPACE), "--csv"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    if result.returncode != 0 or len(rows) != 1 or "error" in (result.stdout + result.stderr).lower():
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stdout} {result.stderr}")
    row = rows[0]
    return {
        "rps": float(row["rps"]),
        "p50_ms": float(row["p50_latency_ms"]),
        "p99_ms": float(row["p99_latency_ms"]),
    }


def configurations(quick: bool) -> list[dict[str, int]]:
    clients = [50] if quick else [1, 10, 50]
    return [{"pipeline": p, "clients": c} for p in (1, 16) for c in clients]


def measure(ports: dict[str, int], quick: bool) -> list[dict[str, Any]]:
    rounds = 1 if quick else 3
    runs = []
    for config in configurations(quick):
        pipeline, clients = config["pipeline"], config["clients"]
        requests = (2_000 if quick else 50_000) * (4 if pipeline > 1 else 1)
        if clients == 1 and pipeline == 1:
            requests //= 5  # one client waits out every round trip: fewer requests take as long
        for test in TESTS:
            samples: dict[str, list[dict[str, float]]] = {peer: [] for peer in PEERS}
            for n in range(rounds):
                for peer in PEERS if n % 2 == 0 else reversed(PEERS):  # alternate who goes first
                    progress(f"{test} -P {pipeline} -c {clients}: {peer}, round {n + 1}/{rounds}")
                    samples[peer].append(redis_benchmark(ports[peer], test, requests, clients, pipeline))
            figures: dict[str, dict[str, Any]] = {
                peer: {
                    "rps": median([s["rps"] for s in samples[peer]]),
                    "p50_ms": median([s["p50_ms"] for s in samples[peer]]),
                    "p99_ms": median([s["p99_ms"] for s in samples[peer]]),
                    "samples": samples[peer],
                }
                for peer in PEERS
            }
            runs.append(
                {
                    "test": test.upper(),
                    "pipeline": pipeline,
                    "clients": clients,
                    "requests": requests,
                    **figures,
                    "gateway_vs_redis": figures["gateway"]["rps"] / figures["redis"]["rps"],
                }
            )
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one client count, one round, few requests")
    parser.add_argument("--out", default="bench/results/resp.json")
    args = parser.parse_args(argv)
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            console.print(f"[red]{tool} is not installed (scripts/install-redis installs it)[/red]")
            return 1
    exit_on_sigterm()
    root = tempfile.mkdtemp(prefix="kvc-resp-bench-")
    try:
        with redis_server(os.path.join(root, "redis"), "--appendonly", "no") as server:
            port = free_port()
            with kvcluster.start(os.path.join(root, "kv"), durability="none", resp=f"127.0.0.1:{port}") as cluster:
                shards = len(cluster.connect().stats()["shards"])
                runs = measure({"redis": server.port, "gateway": port}, args.quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratios = {
        f"gateway / redis, {r['test']} -P {r['pipeline']} -c {r['clients']}": check_target(r["gateway_vs_redis"])
        for r in runs
    }
    results = {
        "benchmark": "resp",
        "environment": environment(),
        "parameters": {
            "quick": args.quick,
            "keyspace": KEYSPACE,
            "value_bytes": 3,
            "shards": shards,
            "durability": "none",
            "redis": "--save '' --appendonly no",
        },
        "runs": runs,
        "ratios": ratios,
    }
    save_results(Path(args.out), results, plot)
    print_table(
        "redis-benchmark: requests/s",
        ["test", "-P", "-c", "redis", "gateway", "gateway / redis", "redis p50 ms", "gateway p50 ms"],
        [
            [
                r["test"],
                r["pipeline"],
                r["clients"],
                f"{r['redis']['rps']:,.0f}",
                f"{r['gateway']['rps']:,.0f}",
                f"{r['gateway_vs_redis']:.3f}",
                f"{r['redis']['p50_ms']:.3f}",
                f"{r['gateway']['p50_ms']:.3f}",
            ]
            for r in runs
        ],
        console,
    )
    print_ratios(ratios, console)
    return 0


def plot(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    labels = [f"{r['test']}\n-P {r['pipeline']} -c {r['clients']}" for r in runs]
    x = range(len(runs))
    fig, axis = plt.subplots(figsize=(max(6.0, 1.1 * len(runs) + 2), 4))
    for offset, peer, color in ((-0.2, "redis", "tab:red"), (0.2, "gateway", "tab:blue")):
        axis.bar([i + offset for i in x], [r[peer]["rps"] for r in runs], width=0.4, label=peer, color=color)
    for i, r in enumerate(runs):
        axis.annotate(
            f"{r['gateway_vs_redis']:.2f}x", (i + 0.2, r["gateway"]["rps"]), ha="center", va="bottom", fontsize=8
        )
    axis.set_xticks(list(x), labels, fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("requests/s (log scale)")
    axis.set_title("redis-benchmark: redis-server vs the kvcluster RESP gateway")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
