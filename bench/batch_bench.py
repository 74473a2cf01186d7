"""Batch benchmark: kvcluster's set_many / get_many beside redis-py MSET / MGET and pipelines.

Run from the repository root (bench is a package, so run it as a module):

    .venv/bin/python -m bench.batch_bench            # full: 1.5 s per case in 3 runs, ~2 minutes
    .venv/bin/python -m bench.batch_bench --quick    # smoke run: 0.3 s per case, ~30 s

Both servers are started by this script and stopped at the end (also on errors):
kvcluster with durability "interval" and one shard per core; redis-server with an AOF
fsynced every second (the peer of "interval"). Clients are redis-py with hiredis and
kvcluster's sync Client. 20,000 keys (key:%06d) hold "value-%08d" strings, all
written before anything is timed.

Cases, each for batch sizes 1, 10, 100 and 1000 (a batch is `size` distinct keys,
taken in turn from the key space; throughput counts keys, not batches):

  kvcluster get_many / set_many, BEST_EFFORT and ALL_OR_NOTHING,
      "spread" (consecutive keys: spread over every shard; ALL_OR_NOTHING sets are a
      two-phase commit) and "single" (every key of a batch on one shard: one message;
      ALL_OR_NOTHING sets are one ATOMIC record)
  redis-py MGET, MSET, and a pipeline of `size` SET (GET) commands (transaction=False)

and at batch size 100 the same with two client processes at once (spawned, released
together by a barrier; their keys half the key space apart).

Each case's time budget is split into --repeats runs taken in turns with the other
cases, after a short untimed warm-up; keys/s is the median over runs. Results go to
bench/results/batch.json and batch.png (see --out); a table of every figure and of
the ratios against the targets is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import multiprocess
import redis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

import kvcluster
from bench.common import (
    PACKAGES,
    check_target,
    environment,
    exit_on_sigterm,
    filesystem_of,
    make_console,
    print_ratios,
    print_table,
    progress,
    redis_server,
    summary,
    write_json,
)
from kvcluster import BatchMode

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "batch.json"
NAMESPACE = "bench"
SIZES = (1, 10, 100, 1000)
WORKERS = 2
REDIS_ARGS = ("--appendonly", "yes", "--appendfsync", "everysec")
MODES = {"best": BatchMode.BEST_EFFORT, "aon": BatchMode.ALL_OR_NOTHING}

console = make_console()

Op = Callable[[int], object]  # run batch number i


@dataclass(frozen=True)
class Params:
    seconds: float
    repeats: int
    warmup: float
    keys: int = 20_000
    shards: int = os.cpu_count() or 1
    durability: str = "interval"

    @property
    def run_seconds(self) -> float:
        return self.seconds / self.repeats


@dataclass(frozen=True)
class Spec:
    """One case; picklable, so a worker process builds its own clients from it."""

    peer: str  # "kvcluster" or "redis"
    op: str  # get or set
    style: str  # kvcluster: best | aon; redis: batch (MGET/MSET) | pipeline
    layout: str  # kvcluster: spread | single; redis: "-"
    size: int
    processes: int = 1

    @property
    def name(self) -> str:
        return f"{self.processes}p.{self.peer}.{self.op}.{self.style}.{self.layout}.{self.size}"

    @property
    def label(self) -> str:
        if self.peer == "redis":
            what = {"batch": "MGET" if self.op == "get" else "MSET", "pipeline": f"pipeline {self.op.upper()}"}
            return f"redis {what[self.style]}"
        mode = "BEST_EFFORT" if self.style == "best" else "ALL_OR_NOTHING"
        return f"kvcluster {self.op}_many {mode} {self.layout}"


@functools.cache
def workload(n: int) -> tuple[list[str], list[str]]:
    return [f"key:{i:06d}" for i in range(n)], [f"value-{i:08d}" for i in range(n)]


def batches(keys: list[str], values: list[str], size: int, first: int) -> list[tuple[list[str], dict[str, str]]]:
    """The key space cut into batches of `size`, starting at key `first`."""
    out = []
    for start in range(0, len(keys) - size + 1, size):
        chosen = [(first + start + j) % len(keys) for j in range(size)]
        out.append(([keys[i] for i in chosen], {keys[i]: values[i] for i in chosen}))
    return out


def by_shard(client: kvcluster.Client, keys: list[str]) -> list[list[str]]:
    """`keys` grouped by the shard that owns them (for single-shard batches)."""
    groups: dict[int, list[str]] = {}
    ns = NAMESPACE.encode()
    for key in keys:
        groups.setdefault(client.core.map.shard_for(ns, key.encode()), []).append(key)
    return [groups[shard] for shard in sorted(groups)]


@contextlib.contextmanager
def operation(spec: Spec, address: str, port: int, n: int, worker: int = 0) -> Iterator[Op]:
    """Batch number i of `spec`, over connections of this process's own."""
    keys, values = workload(n)
    first = worker * n // WORKERS
    value_of = dict(zip(keys, values, strict=True))
    if spec.peer == "kvcluster":
        with kvcluster.Client(address, timeout=30.0) as client:
            if spec.layout == "single":
                plan = [
                    (list(part), {k: value_of[k] for k in part})
                    for group in by_shard(client, keys[first:] + keys[:first])
                    for part in (group[i : i + spec.size] for i in range(0, len(group) - spec.size + 1, spec.size))
                ]
            else:
                plan = batches(keys, values, spec.size, first)
            namespace = client.namespace(NAMESPACE)
            mode = MODES[spec.style]
            if spec.op == "get":
                yield lambda i: namespace.get_many(plan[i % len(plan)][0], mode)
            else:
                yield lambda i: namespace.set_many(plan[i % len(plan)][1], mode)
        return
    plan = batches(keys, values, spec.size, first)
    r = redis.Redis(host="127.0.0.1", port=port)
    try:
        if spec.style == "batch":
            if spec.op == "get":
                yield lambda i: r.mget(plan[i % len(plan)][0])
            else:
                yield lambda i: r.mset(plan[i % len(plan)][1])
        else:

            def pipelined(i: int) -> object:
                pipe = r.pipeline(transaction=False)
                if spec.op == "get":
                    for key in plan[i % len(plan)][0]:
                        pipe.get(key)
                else:
                    for key, value in plan[i % len(plan)][1].items():
                        pipe.set(key, value)
                return pipe.execute()

            yield pipelined
    finally:
        r.close()


def timed(op: Op, seconds: float) -> tuple[int, float]:
    """Batches run in `seconds` (checking the clock every batch), and the time taken."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        op(done)
        done += 1
        now = time.perf_counter()
        if now >= deadline:
            return done, now - started


# -- two client processes ------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init_worker(barrier: Any) -> None:
    _worker["barrier"] = barrier


def _worker_run(task: tuple[Spec, str, int, int, int, Params]) -> tuple[int, float]:
    spec, address, port, n, index, p = task
    with operation(spec, address, port, n, index) as op:
        gc.collect()
        timed(op, p.warmup)
        _worker["barrier"].wait(timeout=60)
        return timed(op, p.run_seconds)


# -- measuring -----------------------------------------------------------------------


def cases(sizes: tuple[int, ...] = SIZES, two_process: bool = True) -> list[Spec]:
    specs = []
    for size in sizes:
        for op in ("get", "set"):
            for style in ("best", "aon"):
                for layout in ("spread", "single"):
                    specs.append(Spec("kvcluster", op, style, layout, size))
            specs.append(Spec("redis", op, "batch", "-", size))
            specs.append(Spec("redis", op, "pipeline", "-", size))
    for op in ("get", "set") if two_process else ():
        for style in ("best", "aon"):
            specs.append(Spec("kvcluster", op, style, "spread", 100, WORKERS))
        specs.append(Spec("redis", op, "batch", "-", 100, WORKERS))
        specs.append(Spec("redis", op, "pipeline", "-", 100, WORKERS))
    return specs


def measure(specs: list[Spec], address: str, port: int, pool: Any, p: Params) -> dict[str, list[float]]:
    """keys/s of every run of every case; the runs of all cases taken in turns."""
    rates: dict[str, list[float]] = {spec.name: [] for spec in specs}
    with contextlib.ExitStack() as stack:
        ops = {
            spec.name: stack.enter_context(operation(spec, address, port, p.keys))
            for spec in specs
            if spec.processes == 1
        }
        for run in range(p.repeats):
            progress(f"run {run + 1} of {p.repeats}: {len(specs)} cases")
            for spec in specs:
                if spec.processes == 1:
                    timed(ops[spec.name], p.warmup)
                    gc.collect()
                    done, seconds = timed(ops[spec.name], p.run_seconds)
                    rates[spec.name].append(done * spec.size / seconds)
                else:
                    tasks = [(spec, address, port, p.keys, w, p) for w in range(WORKERS)]
                    parts = pool.map(_worker_run, tasks, chunksize=1)
                    rates[spec.name].append(sum(done * spec.size / seconds for done, seconds in parts))
    return rates


def preload(address: str, port: int, n: int) -> None:
    keys, values = workload(n)
    with kvcluster.connect(address) as client:
        client.create_namespace(NAMESPACE)
        namespace = client.namespace(NAMESPACE)
        for start in range(0, n, 1000):
            namespace.set_many(dict(zip(keys[start : start + 1000], values[start : start + 1000], strict=True)))
    r = redis.Redis(host="127.0.0.1", port=port)
    r.mset(dict(zip(keys, values, strict=True)))
    r.close()


# -- results -------------------------------------------------------------------------


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    def rate(name: str) -> float | None:
        case = results.get(name)
        return None if case is None else float(case["keys_per_s"]["median"])

    def ratio(a: str, b: str, target: float | None = None) -> dict[str, Any]:
        top, bottom = rate(a), rate(b)
        value = None if top is None or not bottom else top / bottom
        return check_target(value, target)

    return {
        "get_many_best_100_vs_redis_mget": ratio("1p.kvcluster.get.best.spread.100", "1p.redis.get.batch.-.100", 1.5),
        "set_many_best_100_vs_redis_mset": ratio("1p.kvcluster.set.best.spread.100", "1p.redis.set.batch.-.100", 1.5),
        "set_many_aon_spread_100_vs_best_spread_100": ratio(
            "1p.kvcluster.set.aon.spread.100", "1p.kvcluster.set.best.spread.100", 0.5
        ),
        "get_many_best_100_vs_redis_pipeline_get_100": ratio(
            "1p.kvcluster.get.best.spread.100", "1p.redis.get.pipeline.-.100"
        ),
        "set_many_best_100_vs_redis_pipeline_set_100": ratio(
            "1p.kvcluster.set.best.spread.100", "1p.redis.set.pipeline.-.100"
        ),
        "set_many_aon_single_100_vs_best_single_100": ratio(
            "1p.kvcluster.set.aon.single.100", "1p.kvcluster.set.best.single.100"
        ),
        "get_many_best_1000_vs_redis_mget": ratio("1p.kvcluster.get.best.spread.1000", "1p.redis.get.batch.-.1000"),
        "set_many_best_1000_vs_redis_mset": ratio("1p.kvcluster.set.best.spread.1000", "1p.redis.set.batch.-.1000"),
        "two_process_set_many_best_100_vs_redis_mset": ratio(
            "2p.kvcluster.set.best.spread.100", "2p.redis.set.batch.-.100"
        ),
        "two_process_get_many_best_100_vs_redis_mget": ratio(
            "2p.kvcluster.get.best.spread.100", "2p.redis.get.batch.-.100"
        ),
    }


def print_report(results: dict[str, Any]) -> None:
    rows = [
        [
            spec["label"],
            spec["processes"],
            spec["size"],
            f"{case['keys_per_s']['median']:,.0f}",
            f"{case['us_per_batch']:,.1f}",
        ]
        for case in results["cases"].values()
        for spec in [case["spec"]]
    ]
    print_table("Batches (keys/s: median of runs)", ["case", "procs", "size", "keys/s", "µs/batch"], rows, console)
    print_ratios(results["ratios"], console)


SERIES = {
    ("kvcluster", "best", "spread"): ("#1f77b4", "-"),
    ("kvcluster", "aon", "spread"): ("#1f77b4", "--"),
    ("kvcluster", "best", "single"): ("#17becf", "-"),
    ("kvcluster", "aon", "single"): ("#17becf", "--"),
    ("redis", "batch", "-"): ("#d62728", "-"),
    ("redis", "pipeline", "-"): ("#ff7f0e", ":"),
}


def plot(path: Path, results: dict[str, Any]) -> None:
    fig = Figure(figsize=(14, 6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    single = [c for c in results["cases"].values() if c["spec"]["processes"] == 1]
    for ax, op in zip(axes, ("get", "set"), strict=True):
        for (peer, style, layout), (color, line) in SERIES.items():
            points = sorted(
                (c["spec"]["size"], c["keys_per_s"]["median"], c["spec"]["label"])
                for c in single
                if (c["spec"]["peer"], c["spec"]["op"], c["spec"]["style"], c["spec"]["layout"])
                == (peer, op, style, layout)
            )
            if points:
                ax.plot(
                    [x for x, _y, _l in points],
                    [y for _x, y, _l in points],
                    line,
                    color=color,
                    marker="o",
                    label=points[0][2],
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(list(SIZES), [str(s) for s in SIZES])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
        ax.set_xlabel("keys per batch")
        ax.set_title(f"{op}: one client process")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("keys/s (median of runs, log scale)")
    env, params = results["environment"], results["parameters"]
    fig.suptitle(
        f"kvcluster {env['kvcluster']} ({params['shards']} shards, durability {params['durability']}) beside "
        f"redis-server {env['redis_server']} (AOF everysec); {env['cpu_count']} CPUs, "
        f"{params['seconds']:g} s per case in {params['repeats']} run(s)",
        fontsize=10,
    )
    fig.savefig(path, dpi=120)


# -- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[Params, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short budgets, one run per case: a smoke run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON path; the PNG goes beside it")
    parser.add_argument("--dir", help="where temporary files go (a fresh folder inside it, removed at the end)")
    parser.add_argument("--seconds", type=float, help="time budget of each case (default 1.5; quick 0.3)")
    parser.add_argument("--repeats", type=int, help="runs each case's budget is split into (default 3; quick 1)")
    parser.add_argument("--sizes", help="comma-separated batch sizes (default 1,10,100,1000): a partial run")
    parser.add_argument("--one-process", action="store_true", help="skip the two-process cases: a partial run")
    args = parser.parse_args(argv)
    params = Params(
        seconds=args.seconds or (0.3 if args.quick else 1.5),
        repeats=args.repeats or (1 if args.quick else 3),
        warmup=0.05 if args.quick else 0.1,
    )
    if params.seconds <= 0 or params.repeats < 1:
        parser.error("--seconds and --repeats must be positive")
    return params, args


def main(argv: list[str] | None = None) -> int:
    p, args = parse_args(argv)
    exit_on_sigterm()
    started = time.perf_counter()
    env = environment((*PACKAGES, "multiprocess"))
    root = tempfile.mkdtemp(prefix="kvc-batch-bench-", dir=args.dir)
    sizes = tuple(int(size) for size in args.sizes.split(",")) if args.sizes else SIZES
    specs = cases(sizes, not args.one_process)
    try:
        fs = filesystem_of(root)
        console.print(f"batch bench: {len(specs)} cases, {p.seconds} s each in {p.repeats} run(s), in {root}")
        with contextlib.ExitStack() as stack:
            progress("starting redis-server, kvcluster and the worker processes")
            server = stack.enter_context(redis_server(os.path.join(root, "redis"), *REDIS_ARGS))
            cluster = stack.enter_context(
                kvcluster.start(os.path.join(root, "kv"), shards=p.shards, durability=p.durability)
            )
            spawn = multiprocess.get_context("spawn")
            pool = stack.enter_context(
                spawn.Pool(WORKERS, initializer=_init_worker, initargs=(spawn.Barrier(WORKERS),))
            )
            address = str(cluster.data_dir)
            preload(address, server.port, p.keys)
            rates = measure(specs, address, server.port, pool, p)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results: dict[str, Any] = {
        "benchmark": "batch",
        "environment": env,
        "parameters": {
            **asdict(p),
            "quick": args.quick,
            "sizes": list(SIZES),
            "filesystem": fs,
            "redis_args": [*REDIS_ARGS, "--save", ""],
            "workers": f"{WORKERS} processes, multiprocess spawn Pool, started together by a Barrier",
            "clients": "kvcluster sync Client (Unix-socket fast path); redis-py with hiredis over TCP",
        },
        "cases": {
            spec.name: {
                "spec": {**asdict(spec), "label": spec.label},
                "keys_per_s": summary(rates[spec.name]),
                "us_per_batch": 1e6 * spec.size * spec.processes / statistics.median(rates[spec.name]),
            }
            for spec in specs
        },
        "elapsed_seconds": time.perf_counter() - started,
        "load_average_end": list(os.getloadavg()),
    }
    results["ratios"] = ratios(results["cases"])
    out = write_json(args.out, results)
    png = out.with_suffix(".png")
    plot(png, results)
    print_report(results)
    console.print(f"wrote {out} and {png} in {results['elapsed_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
