"""Sequential operations: every single-key operation, one at a time from one client,
at 1k, 10k, 100k and 1M keys, beside redis-py (hiredis), a Manager dict and diskcache.

Run from the repository root:

    .venv/bin/python -m bench.ops_bench            # full: ~4 minutes
    .venv/bin/python -m bench.ops_bench --quick    # smoke run: 1k and 10k keys, ~30 s

Peers, all started by this script and stopped at the end: kvcluster with 1 shard and
durability `interval` (one client keeps one shard busy; more shards serve more clients,
see bench/mixed_bench.py); redis-server with `appendfsync everysec`, its peer; the
standard library's `multiprocessing.Manager().dict()` (no durability); `diskcache.Cache`
(SQLite in WAL mode, embedded: no server process).

Operations, each the nearest equivalent on every peer ("—" where a peer has none):

  get         kvcluster get          redis GET          dict.get        Cache.get
  insert      set of a new key       SET                d[k] = v        Cache.set
  set         set of an existing key SET                d[k] = v        Cache.set
  update      update (existing only) SET XX GET         —               —
  exists      exists                 EXISTS             k in d          k in Cache
  consume     consume (get + delete) GETDEL             d.pop(k)        Cache.pop
  delete      delete                 DEL                del d[k]        Cache.delete

The key counts grow in steps (1k, then 9k more, ...), each step loaded untimed in
batches. Keys are `key:%07d`, values 100-byte strings. At each size every operation runs
for --seconds per peer, split into two runs taken in turns with the other peers;
destructive ones (consume, delete) stop when they have used every key once, and what
they removed (or inserted) is put back untimed. Results: bench/results/ops.json and
ops.png (ops/s per operation over key count, one line per peer).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
import redis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import kvcluster
from bench.common import (
    PACKAGES,
    check_target,
    environment,
    exit_on_sigterm,
    filesystem_of,
    make_console,
    percentile,
    print_ratios,
    print_table,
    progress,
    redis_server,
    save_results,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ops.json"
SIZES = (1_000, 10_000, 100_000, 1_000_000)
OPS = ("get", "insert", "set", "update", "exists", "consume", "delete")
DESTRUCTIVE = frozenset({"consume", "delete"})
VALUE_BYTES = 100
LOAD_BATCH = 1000
TARGET_SIZE = 10_000  # the size whose get/set ratios are checked against the targets

console = make_console()

Op = Callable[[str], object]


def key(i: int) -> str:
    return f"key:{i:07d}"


def new_key(i: int) -> str:
    return f"new:{i:07d}"


def value(i: int) -> str:
    return f"{i:08d}".ljust(VALUE_BYTES, "v")


# -- peers ---------------------------------------------------------------------------


@dataclass
class Peer:
    """One store: its operations on a key, and untimed bulk loading and removal."""

    name: str
    ops: dict[str, Op]
    load: Callable[[list[str], list[str]], object]  # set keys to values, in batches
    remove: Callable[[list[str]], object]


def kvcluster_peer(client: kvcluster.Client) -> Peer:
    ns = client.namespace("default")
    v = value(0)
    return Peer(
        "kvcluster",
        {
            "get": ns.get,
            "insert": lambda k: ns.set(k, v),
            "set": lambda k: ns.set(k, v),
            "update": lambda k: ns.update(k, v),
            "exists": ns.exists,
            "consume": ns.consume,
            "delete": ns.delete,
        },
        lambda keys, values: ns.set_many(dict(zip(keys, values, strict=True))),
        ns.delete_many,
    )


def redis_peer(client: redis.Redis) -> Peer:
    v = value(0)

    def load(keys: list[str], values: list[str]) -> None:
        client.mset(dict(zip(keys, values, strict=True)))

    return Peer(
        "redis-py",
        {
            "get": client.get,
            "insert": lambda k: client.set(k, v),
            "set": lambda k: client.set(k, v),
            "update": lambda k: client.set(k, v, xx=True, get=True),
            "exists": client.exists,
            "consume": client.getdel,
            "delete": client.delete,
        },
        load,
        lambda keys: client.delete(*keys),
    )


def manager_peer(shared: Any) -> Peer:
    v = value(0)

    def remove(keys: list[str]) -> None:
        for k in keys:
            shared.pop(k, None)

    return Peer(
        "Manager dict",
        {
            "get": shared.get,
            "insert": lambda k: shared.__setitem__(k, v),
            "set": lambda k: shared.__setitem__(k, v),
            "exists": shared.__contains__,
            "consume": shared.pop,
            "delete": shared.__delitem__,
        },
        lambda keys, values: shared.update(dict(zip(keys, values, strict=True))),
        remove,
    )


def diskcache_peer(cache: diskcache.Cache) -> Peer:
    v = value(0)

    def load(keys: list[str], values: list[str]) -> None:
        with cache.transact():  # one SQLite transaction per batch
            for k, val in zip(keys, values, strict=True):
                cache.set(k, val)

    def remove(keys: list[str]) -> None:
        with cache.transact():
            for k in keys:
                cache.delete(k)

    return Peer(
        "diskcache",
        {
            "get": cache.get,
            "insert": lambda k: cache.set(k, v),
            "set": lambda k: cache.set(k, v),
            "exists": cache.__contains__,
            "consume": cache.pop,
            "delete": cache.delete,
        },
        load,
        remove,
    )


@contextlib.contextmanager
def peers(root: str) -> Iterator[list[Peer]]:
    """Every peer, started; stopped on exit."""
    from multiprocessing import Manager

    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(kvcluster.start(os.path.join(root, "kv"), shards=1, durability="interval"))
        client = stack.enter_context(cluster.connect())
        server = stack.enter_context(
            redis_server(os.path.join(root, "redis"), "--appendonly", "yes", "--appendfsync", "everysec")
        )
        r = redis.Redis(host="127.0.0.1", port=server.port)
        stack.callback(r.close)
        manager = stack.enter_context(Manager())
        cache = stack.enter_context(diskcache.Cache(os.path.join(root, "diskcache")))
        yield [kvcluster_peer(client), redis_peer(r), manager_peer(manager.dict()), diskcache_peer(cache)]


# -- measuring -----------------------------------------------------------------------


@dataclass
class Run:
    ops: int
    seconds: float
    latencies_ns: array[int]


def timed(op: Op, keys: list[str], seconds: float, stop_at_end: bool) -> Run:
    """op(k) over `keys` in order (cycling unless `stop_at_end`), timing each call."""
    clock = time.perf_counter_ns
    latencies = array("q")
    record = latencies.append
    start = end = clock()
    deadline = start + int(seconds * 1e9)
    i, n = 0, len(keys)
    while end < deadline:
        t0 = clock()
        op(keys[i])
        end = clock()
        record(end - t0)
        i += 1
        if i == n:
            if stop_at_end:
                break
            i = 0
    return Run(len(latencies), (end - start) / 1e9, latencies)


def load(peer: Peer, first: int, last: int) -> None:
    for lo in range(first, last, LOAD_BATCH):
        hi = min(last, lo + LOAD_BATCH)
        peer.load([key(i) for i in range(lo, hi)], [value(i) for i in range(lo, hi)])


def measure_op(peer: Peer, op: str, size: int, seconds: float, offset: int) -> Run:
    """One run of `op` on `peer` holding `size` keys; leaves the peer holding them again."""
    fn = peer.ops[op]
    if op == "insert":
        keys = [new_key(i) for i in range(size)]
        run = timed(fn, keys, seconds, stop_at_end=True)
        peer.remove(keys[: run.ops])
        return run
    # a stride through the keys: the runs of one case touch different ones
    keys = [key((offset + i * 7919) % size) for i in range(size)]
    run = timed(fn, keys, seconds, stop_at_end=op in DESTRUCTIVE)
    if op in DESTRUCTIVE:
        touched = keys[: run.ops]
        for lo in range(0, len(touched), LOAD_BATCH):
            part = touched[lo : lo + LOAD_BATCH]
            peer.load(part, [value(int(k[4:])) for k in part])
    return run


def case_result(runs: list[Run]) -> dict[str, Any]:
    latencies = [x / 1000 for run in runs for x in run.latencies_ns]
    ops = sum(run.ops for run in runs)
    seconds = sum(run.seconds for run in runs)
    return {
        "ops": ops,
        "seconds": seconds,
        "ops_per_s": ops / seconds if seconds else None,
        "runs_ops_per_s": [run.ops / run.seconds for run in runs if run.seconds],
        "p50_us": percentile(latencies, 50),
        "p99_us": percentile(latencies, 99),
    }


def measure(all_peers: list[Peer], sizes: tuple[int, ...], seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    loaded = 0
    for size in sizes:
        progress(f"loading {size - loaded:,} keys into every peer (now {size:,})")
        for peer in all_peers:
            load(peer, loaded, size)
        loaded = size
        results[str(size)] = {}
        for op in OPS:
            runs: dict[str, list[Run]] = {peer.name: [] for peer in all_peers if op in peer.ops}
            for turn in range(2):  # in turns: a change in the machine's load hits every peer alike
                for peer in all_peers:
                    if op in peer.ops:
                        gc.collect()
                        runs[peer.name].append(measure_op(peer, op, size, seconds / 2, offset=turn * size // 2))
            results[str(size)][op] = {name: case_result(r) for name, r in runs.items()}
            line = ", ".join(f"{name} {res['ops_per_s']:,.0f}/s" for name, res in results[str(size)][op].items())
            progress(f"{size:>9,} keys  {op:8s} {line}")
    return results


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, by_op in results.items():
        for op, by_peer in by_op.items():
            kv = by_peer["kvcluster"]["ops_per_s"]
            for peer in ("redis-py", "Manager dict", "diskcache"):
                if peer not in by_peer:
                    continue
                target = 1.5 if int(size) == TARGET_SIZE and op in ("get", "set") and peer != "diskcache" else None
                out[f"{op} at {int(size):,} keys, kvcluster ÷ {peer}"] = check_target(
                    kv / by_peer[peer]["ops_per_s"], target
                )
    return out


# -- report --------------------------------------------------------------------------


def print_report(results: dict[str, Any]) -> None:
    names = ["kvcluster", "redis-py", "Manager dict", "diskcache"]
    rows = []
    for size, by_op in results["results"].items():
        for op, by_peer in by_op.items():
            cells: list[object] = [f"{op}, {int(size):,} keys"]
            for name in names:
                res = by_peer.get(name)
                cells.append(None if res is None else f"{res['ops_per_s']:,.0f} · {res['p50_us']:.0f} µs")
            rows.append(cells)
    print_table("ops/s · p50 latency, one client, one operation at a time", ["case", *names], rows, console)
    print_ratios({k: v for k, v in results["ratios"].items() if v["target"] is not None}, console)


def plot(path: Path, results: dict[str, Any]) -> None:
    sizes = [int(s) for s in results["results"]]
    fig = Figure(figsize=(14, 7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 4).flatten()
    colours = {"kvcluster": "C0", "redis-py": "C3", "Manager dict": "C2", "diskcache": "C7"}
    for ax, op in zip(axes, OPS, strict=False):
        for name, colour in colours.items():
            ys = [results["results"][str(s)][op].get(name, {}).get("ops_per_s") for s in sizes]
            if any(y is not None for y in ys):
                ax.plot(sizes, [y or float("nan") for y in ys], marker="o", color=colour, label=name)
        ax.set_xscale("log")
        ax.set_title(op)
        ax.set_xlabel("keys")
        ax.set_ylabel("ops/s")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[-1].axis("off")
    axes[0].legend(fontsize="small")
    fig.suptitle("One client, one operation at a time (kvcluster: 1 shard, durability interval)")
    fig.savefig(path, dpi=110)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.8, help="per operation, size and peer (default 0.8)")
    parser.add_argument("--quick", action="store_true", help="1k and 10k keys, 0.3 s per case")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON path; the PNG goes beside it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = SIZES[:2] if args.quick else SIZES
    seconds = 0.3 if args.quick else args.seconds
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="kv-ops-bench-") as root, peers(root) as all_peers:
        results: dict[str, Any] = {
            "benchmark": "ops",
            "environment": environment((*PACKAGES, "diskcache")),
            "filesystem": filesystem_of(root),
            "parameters": {"sizes": sizes, "seconds_per_case": seconds, "value_bytes": VALUE_BYTES, "shards": 1},
        }
        results["results"] = measure(all_peers, sizes, seconds)
    results["ratios"] = ratios(results["results"])
    print_report(results)
    save_results(args.out, results, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
