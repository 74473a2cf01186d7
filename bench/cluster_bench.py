"""Cluster benchmark: kvcluster's clients beside redis-py (hiredis) and a multiprocessing Manager dict.

Run from the repository root (bench is a package, so run it as a module):

    .venv/bin/python -m bench.cluster_bench            # full: 3 s per case in 3 runs, ~2 minutes
    .venv/bin/python -m bench.cluster_bench --quick    # smoke run: 0.5 s per case, ~20 s

Every peer is started by this script, runs for the whole benchmark and is stopped at the
end (also on errors): kvcluster with durability "interval", once with 1 shard and once
with the default one shard per core (that one also runs the router, --listen);
redis-server with an AOF fsynced every second, the peer of "interval"; and the standard
library's Manager (a SyncManager, the class multiprocessing.Manager() starts, with one
dict shared by every connection, so worker processes reach it by address and authkey).

The keys are key:%06d over 10,000 keys, all written before anything is timed (a get
always hits, a set overwrites); values are the str "value-%08d". Workloads:

  single       one client process, one request at a time, every request timed
  two_process  two spawned client processes doing the same, released together by a barrier
  inflight     64 requests outstanding: AsyncClient and redis.asyncio with a fixed pool of
               64 tasks (each sends its next request when its last is answered), and
               redis-py pipelines of 64 commands (latency is then per pipeline)
  router       single-op get through the router's tcp:// address (compare: single get)

Each case has a time budget (--seconds), split into --repeats runs taken in turns with
the other cases, so a change in the shared machine's load hits them alike; every run
follows a short untimed warm-up. ops/s is the median over runs; latencies are pooled.
Results go to bench/results/cluster.json and cluster.png (see --out); a table of every
figure, and of the ratios with their targets, is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import math
import os
import secrets
import shutil
import socket
import statistics
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.managers import DictProxy, SyncManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import multiprocess
import redis
import redis.asyncio
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

import kvcluster
from bench.common import (
    PACKAGES,
    RedisServer,
    check_target,
    environment,
    exit_on_sigterm,
    filesystem_of,
    free_port,
    make_console,
    percentile,
    print_ratios,
    print_table,
    progress,
    redis_info,
    redis_server,
    summary,
    write_json,
)
from kvcluster.actors.shard import SPIN
from kvcluster.datadir import DataDir

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cluster.json"
NAMESPACE = "default"  # exists in every cluster
WORKERS = 2  # client processes of the two_process workload
# redis's peer of durability "interval": every write goes to the AOF before its reply,
# fsynced once a second; no RDB snapshots (common.redis_server adds --save "").
REDIS_ARGS = ("--appendonly", "yes", "--appendfsync", "everysec")
HISTOGRAM_STEPS = 4  # latency histogram buckets per doubling (each ~19% wide)

Op = Callable[[int], object]  # request i of the workload: set or get key i
AsyncOp = Callable[[int], Awaitable[object]]

console = make_console()


@dataclass(frozen=True)
class Params:
    seconds: float  # time budget of one case, split over `repeats` runs
    repeats: int
    warmup: float  # seconds of untimed requests before each run
    keys: int = 10_000
    inflight: int = 64
    shards: int = os.cpu_count() or 1  # the default cluster: one shard per core
    durability: str = "interval"

    @property
    def run_seconds(self) -> float:
        return self.seconds / self.repeats


@functools.cache
def workload(n: int) -> tuple[list[str], list[str]]:
    """Keys and values, built once per process."""
    return [f"key:{i:06d}" for i in range(n)], [f"value-{i:08d}" for i in range(n)]


# -- peers ---------------------------------------------------------------------------


class SharedDictManager(SyncManager):
    """multiprocessing.Manager()'s class with one dict that every connection shares.

    Worker processes are spawned by `multiprocess` (dill), which cannot hand them a
    standard-library proxy with its authkey; with this registration they connect by
    address and authkey and get a DictProxy to the same dict.
    """

    if TYPE_CHECKING:

        def shared_dict(self) -> DictProxy[str, str]: ...


_shared: dict[str, str] = {}


def _the_shared_dict() -> dict[str, str]:
    return _shared  # runs in the manager's server process: one dict for every caller


SharedDictManager.register("shared_dict", callable=_the_shared_dict, proxytype=DictProxy)


def connect_shared_dict(address: str, authkey: bytes) -> DictProxy[str, str]:
    """The manager's one dict, over a connection of this process's own."""
    manager = SharedDictManager(address=address, authkey=authkey)
    manager.connect()
    return manager.shared_dict()


@dataclass(frozen=True)
class Peer:
    """How to reach one server; picklable, so a worker process connects by itself."""

    kind: str  # "kvcluster", "redis" or "manager"
    target: str  # kvcluster: a data directory or tcp:// router; redis: a URL; manager: its socket
    authkey: bytes = b""  # the manager's


@contextlib.contextmanager
def connected(peer: Peer, n: int) -> Iterator[dict[str, Op]]:
    """`set` and `get` of key i over a connection of this process's own."""
    keys, values = workload(n)
    if peer.kind == "kvcluster":
        with kvcluster.connect(peer.target) as client:
            ns = client.namespace(NAMESPACE)
            kv_set, kv_get = ns.set, ns.get
            yield {"set": lambda i: kv_set(keys[i], values[i]), "get": lambda i: kv_get(keys[i])}
    elif peer.kind == "redis":
        r = redis.Redis.from_url(peer.target)
        try:
            r_set, r_get = r.set, r.get
            yield {"set": lambda i: r_set(keys[i], values[i]), "get": lambda i: r_get(keys[i])}
        finally:
            r.close()
    else:
        shared = connect_shared_dict(peer.target, peer.authkey)
        d_set, d_get = shared.__setitem__, shared.get
        yield {"set": lambda i: d_set(keys[i], values[i]), "get": lambda i: d_get(keys[i])}


@contextlib.asynccontextmanager
async def async_connected(peer: Peer, n: int) -> AsyncIterator[dict[str, AsyncOp]]:
    """`set` and `get` of key i for asyncio: kvcluster's AsyncClient, or redis.asyncio."""
    keys, values = workload(n)
    if peer.kind == "kvcluster":
        client = await kvcluster.AsyncClient.connect(peer.target)
        try:
            ns = await client.namespace(NAMESPACE)
            yield {"set": lambda i: ns.set(keys[i], values[i]), "get": lambda i: ns.get(keys[i])}
        finally:
            await client.close()
    else:  # each request in flight holds a pooled connection: the pool grows to 64
        r = redis.asyncio.Redis.from_url(peer.target)
        try:
            yield {"set": lambda i: r.set(keys[i], values[i]), "get": lambda i: r.get(keys[i])}
        finally:
            await r.aclose()


@contextlib.contextmanager
def redis_pipelined(url: str, n: int, batch: int) -> Iterator[dict[str, Op]]:
    """`set` and `get` of keys i .. i+batch-1 as one pipeline (no MULTI: transaction=False)."""
    keys, values = workload(n)
    r = redis.Redis.from_url(url)

    def sets(i: int) -> object:
        pipe = r.pipeline(transaction=False)
        for j in range(i, i + batch):
            pipe.set(keys[j % n], values[j % n])
        return pipe.execute()

    def gets(i: int) -> object:
        pipe = r.pipeline(transaction=False)
        for j in range(i, i + batch):
            pipe.get(keys[j % n])
        return pipe.execute()

    try:
        yield {"set": sets, "get": gets}
    finally:
        r.close()


@contextlib.contextmanager
def raw_resp(port: int, n: int) -> Iterator[dict[str, Op]]:
    """A floor for redis: pre-encoded RESP commands on a bare TCP socket, no client library.
    It shows what of redis-py's round trip is redis-server's, and what is the client's."""
    keys, values = workload(n)

    def command(*parts: str) -> bytes:
        return f"*{len(parts)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in parts)

    sets = [command("SET", k, v) for k, v in zip(keys, values, strict=True)]
    gets = [command("GET", k) for k in keys]
    # Replies have a known size: +OK, or a bulk string (every value has the same length).
    set_reply, get_reply = b"+OK\r\n", f"${len(values[0])}\r\n{values[0]}\r\n".encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as redis-py sets it
    view = memoryview(bytearray(len(get_reply)))

    def exchange(request: bytes, size: int) -> memoryview:
        sock.sendall(request)
        got = 0
        while got < size:
            received = sock.recv_into(view[got:size])
            if not received:
                raise ConnectionError("redis-server closed the connection")
            got += received
        return view[:size]

    try:
        yield {"set": lambda i: exchange(sets[i], len(set_reply)), "get": lambda i: exchange(gets[i], len(get_reply))}
        if exchange(sets[0], len(set_reply)) != set_reply or exchange(gets[0], len(get_reply)) != get_reply:
            raise RuntimeError("redis-server's replies are not what the raw floor expects")
    finally:
        sock.close()


# -- timed loops ---------------------------------------------------------------------


@dataclass
class Run:
    ops: int
    seconds: float
    ops_per_s: float
    latencies_ns: array[int]  # one per request (per pipeline, for pipelines)
    per_process: list[float] = field(default_factory=list)  # ops/s of each worker process


def make_run(ops: int, seconds: float, latencies_ns: array[int]) -> Run:
    return Run(ops, seconds, ops / seconds, latencies_ns)


def timed_loop(op: Op, n: int, seconds: float, first: int = 0, step: int = 1) -> Run:
    """Call op(first), op(first+step), ... (mod n) one at a time until `seconds` have passed,
    timing each call; the clock read that ends a call also checks the deadline."""
    clock = time.perf_counter_ns
    latencies = array("q")
    record = latencies.append
    i = first
    start = end = clock()
    deadline = start + int(seconds * 1e9)
    while end < deadline:
        t0 = clock()
        op(i)
        end = clock()
        record(end - t0)
        i += step
        if i >= n:
            i -= n
    return make_run(len(latencies) * step, (end - start) / 1e9, latencies)


async def inflight_loop(op: AsyncOp, n: int, tasks: int, seconds: float) -> Run:
    """`tasks` tasks, each sending its next request as soon as its last is answered, so
    `tasks` requests stay in flight until the deadline. Task t takes keys t, t+tasks, ..."""
    clock = time.perf_counter_ns
    latencies = array("q")
    record = latencies.append
    start = clock()
    deadline = start + int(seconds * 1e9)

    async def worker(i: int) -> None:
        while True:
            t0 = clock()
            await op(i)
            t1 = clock()
            record(t1 - t0)
            if t1 >= deadline:
                return
            i = (i + tasks) % n

    await asyncio.gather(*(worker(t) for t in range(tasks)))
    return make_run(len(latencies), (clock() - start) / 1e9, latencies)


def sync_runner(op: Op, p: Params, step: int = 1) -> Callable[[], Run]:
    def run() -> Run:
        gc.collect()  # the previous case's garbage is not this one's cost
        timed_loop(op, p.keys, p.warmup, step=step)
        return timed_loop(op, p.keys, p.run_seconds, step=step)

    return run


def async_runner(peer: Peer, op: str, p: Params) -> Callable[[], Run]:
    async def measure() -> Run:
        async with async_connected(peer, p.keys) as ops:
            await inflight_loop(ops[op], p.keys, p.inflight, p.warmup)
            return await inflight_loop(ops[op], p.keys, p.inflight, p.run_seconds)

    def run() -> Run:
        gc.collect()
        return asyncio.run(measure())

    return run


# -- two client processes ------------------------------------------------------------

_worker: dict[str, Any] = {}  # in a worker process: the pool's start barrier


def _init_worker(barrier: Any) -> None:
    _worker["barrier"] = barrier  # handed over at spawn: a barrier cannot travel with a task


def _worker_run(task: tuple[Peer, str, int, Params]) -> tuple[int, float, bytes]:
    """One worker's share of a two_process run: connect, warm up, wait for the other, run."""
    peer, op, index, p = task
    first = index * p.keys // WORKERS  # the workers start half the key space apart
    with connected(peer, p.keys) as ops:
        gc.collect()
        timed_loop(ops[op], p.keys, p.warmup, first)
        _worker["barrier"].wait(timeout=60)  # a worker that failed breaks it instead of hanging the other
        run = timed_loop(ops[op], p.keys, p.run_seconds, first)
    return run.ops, run.seconds, run.latencies_ns.tobytes()


def two_process_runner(pool: Any, peer: Peer, op: str, p: Params) -> Callable[[], Run]:
    def run() -> Run:
        # chunksize=1 and a barrier both must pass: each of the two workers takes one task
        parts: list[tuple[int, float, bytes]] = pool.map(
            _worker_run, [(peer, op, w, p) for w in range(WORKERS)], chunksize=1
        )
        latencies = array("q")
        rates = []
        for ops, seconds, raw in parts:
            latencies.frombytes(raw)
            rates.append(ops / seconds)
        ops = sum(part[0] for part in parts)
        return Run(ops, max(part[1] for part in parts), sum(rates), latencies, rates)

    return run


# -- cases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    workload: str  # single, two_process, inflight or router
    op: str  # set or get
    peer: str  # short name: kvcluster-1, redis, redis-pipeline, ...
    label: str
    latency_of: str  # what one latency sample times
    run: Callable[[], Run]

    @property
    def name(self) -> str:
        return f"{self.workload}.{self.op}.{self.peer}"


def build_cases(
    stack: contextlib.ExitStack, peers: dict[str, Peer], port: int, pool: Any, router: Peer, p: Params
) -> list[Case]:
    """Every case, in the order a round runs them; connects this process's clients and
    writes every key into every server."""
    kv_n = "kvcluster-default"
    labels = {
        "kvcluster-1": "kvcluster, 1 shard",
        kv_n: f"kvcluster, {p.shards} shards",
        "redis": "redis-py (TCP)",
        "redis-unix": "redis-py (Unix socket)",
        "redis-raw": "floor: raw RESP socket to redis (TCP)",
        "manager": "Manager dict",
    }
    sync = {name: stack.enter_context(connected(peer, p.keys)) for name, peer in peers.items()}
    sync["redis-raw"] = stack.enter_context(raw_resp(port, p.keys))
    for name in ("kvcluster-1", kv_n, "redis", "manager"):  # redis-unix is the same server as redis
        progress(f"writing {p.keys:,} keys into {labels[name]}")
        for i in range(p.keys):
            sync[name]["set"](i)
    through_router = stack.enter_context(connected(router, p.keys))
    pipelined = stack.enter_context(redis_pipelined(peers["redis"].target, p.keys, p.inflight))
    request, inflight = "request", f"request, {p.inflight} in flight"

    cases: list[Case] = []
    for op in ("set", "get"):
        for name, label in labels.items():
            cases.append(Case("single", op, name, label, request, sync_runner(sync[name][op], p)))
        if op == "get":  # right after the direct get of the same cluster
            label = f"kvcluster, {p.shards} shards, via router"
            cases.append(Case("router", op, "kvcluster-router", label, request, sync_runner(through_router[op], p)))
    for op in ("set", "get"):
        for name in (kv_n, "redis", "manager"):
            label = f"{labels[name]}, {WORKERS} processes"
            cases.append(Case("two_process", op, name, label, request, two_process_runner(pool, peers[name], op, p)))
    for op in ("set", "get"):
        label = f"kvcluster, {p.shards} shards, AsyncClient"
        cases.append(Case("inflight", op, kv_n, label, inflight, async_runner(peers[kv_n], op, p)))
        label = f"redis-py pipelines of {p.inflight} (TCP)"
        run = sync_runner(pipelined[op], p, step=p.inflight)
        cases.append(Case("inflight", op, "redis-pipeline", label, f"pipeline of {p.inflight}", run))
        label = "redis.asyncio (TCP)"
        cases.append(Case("inflight", op, "redis-asyncio", label, inflight, async_runner(peers["redis"], op, p)))
    return cases


def measure(cases: list[Case], p: Params) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {case.name: [] for case in cases}
    for rep in range(p.repeats):
        for case in cases:  # in turns: a change in the machine's load hits every case alike
            progress(f"run {rep + 1}/{p.repeats}: {case.workload} {case.op}, {case.label}")
            runs[case.name].append(case.run())
    return runs


def cluster_state(cluster: kvcluster.Cluster) -> list[dict[str, Any]]:
    """Per shard, after the run: requests served, CPU, and journal archives on disk. Each
    archive is one rotation (compaction, zlib, fsync) that the set runs paid for: the
    default 1 MiB journal rotates every ~15,000 of these writes."""
    with cluster.connect() as client:
        shards = client.stats()["shards"]
    data = DataDir.at(cluster.data_dir)
    return [
        {key: shard[key] for key in ("id", "keys", "ops_total", "cpu_seconds", "journal_bytes")}
        | {"archives": len(list(Path(data.shard_dir(shard["id"])).glob("journal.t*.zz")))}
        for shard in shards
    ]


def redis_state(server: RedisServer) -> dict[str, Any]:
    info = redis_info(server.client, "persistence")
    keys = ("aof_current_size", "aof_rewrites", "aof_last_write_status", "aof_delayed_fsync")
    return {key: info.get(key) for key in keys}


# -- results -------------------------------------------------------------------------


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, Any]:
    """Percentiles (µs) of pooled latencies, and a log histogram instead of raw samples."""
    ordered = sorted(latencies_ns)
    us = [ns / 1e3 for ns in ordered]
    buckets = Counter(int(HISTOGRAM_STEPS * math.log2(max(ns, 1))) for ns in ordered)
    return {
        "count": len(us),
        "mean": statistics.fmean(us),
        **{name: percentile(us, q) for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9))},
        "max": us[-1],
        "histogram": {
            "bucket_lower_us": [round(2 ** (b / HISTOGRAM_STEPS) / 1e3, 3) for b in sorted(buckets)],
            "counts": [buckets[b] for b in sorted(buckets)],
        },
    }


def case_result(case: Case, runs: list[Run]) -> dict[str, Any]:
    latencies = array("q")
    for run in runs:
        latencies.extend(run.latencies_ns)
    return {
        "workload": case.workload,
        "op": case.op,
        "peer": case.peer,
        "label": case.label,
        "latency_of": case.latency_of,
        "runs": [
            {"ops": r.ops, "seconds": r.seconds, "ops_per_s": r.ops_per_s, "per_process": r.per_process or None}
            for r in runs
        ],
        "ops_per_s": summary([r.ops_per_s for r in runs]),
        "latency_us": latency_summary(latencies),
    }


def ratios(cases: dict[str, Any], shards: int) -> dict[str, Any]:
    """Throughput ratios (ops/s ÷ ops/s); those without a target are for information."""

    def ratio(a: str, b: str, target: float | None = None) -> dict[str, Any]:
        return check_target(cases[a]["ops_per_s"]["median"] / cases[b]["ops_per_s"]["median"], target)

    kvs = {"kvcluster-1": "1 shard", "kvcluster-default": f"{shards} shards"}
    peers = {"redis": "redis-py", "manager": "Manager", "redis-unix": "redis-py Unix", "redis-raw": "raw RESP floor"}
    out: dict[str, Any] = {}
    for kv, shards_label in kvs.items():
        for op in ("get", "set"):
            for peer in ("redis", "manager"):
                name = f"single {op}, kvcluster {shards_label} ÷ {peers[peer]}"
                out[name] = ratio(f"single.{op}.{kv}", f"single.{op}.{peer}", 1.5)
    kv = "kvcluster-default"
    out["64 in flight set, AsyncClient ÷ redis-py pipeline"] = ratio(
        f"inflight.set.{kv}", "inflight.set.redis-pipeline", 2
    )
    out["router get ÷ direct get"] = ratio("router.get.kvcluster-router", f"single.get.{kv}")
    # for information: no target
    for op in ("get", "set"):
        for peer in ("redis-unix", "redis-raw"):
            out[f"single {op}, kvcluster {shards} shards ÷ {peers[peer]}"] = ratio(
                f"single.{op}.{kv}", f"single.{op}.{peer}"
            )
        out[f"single {op}, kvcluster {shards} shards ÷ 1 shard"] = ratio(
            f"single.{op}.{kv}", f"single.{op}.kvcluster-1"
        )
    for op in ("get", "set"):
        for peer in ("redis", "manager"):
            out[f"2 processes {op} ÷ {peers[peer]}"] = ratio(f"two_process.{op}.{kv}", f"two_process.{op}.{peer}")
    out["64 in flight get, AsyncClient ÷ redis-py pipeline"] = ratio(
        f"inflight.get.{kv}", "inflight.get.redis-pipeline"
    )
    for op in ("set", "get"):
        out[f"64 in flight {op}, AsyncClient ÷ redis.asyncio"] = ratio(
            f"inflight.{op}.{kv}", f"inflight.{op}.redis-asyncio"
        )
    return out


def print_report(results: dict[str, Any]) -> None:
    print_table(
        f"Throughput (median of {results['parameters']['repeats']} runs) and latency (pooled)",
        ["workload", "op", "client", "ops/s", "min-max", "p50 µs", "p99 µs", "max µs", "latency of"],
        [
            [
                c["workload"],
                c["op"],
                c["label"],
                f"{c['ops_per_s']['median']:,.0f}",
                f"{c['ops_per_s']['min']:,.0f}-{c['ops_per_s']['max']:,.0f}",
                f"{c['latency_us']['p50']:.1f}",
                f"{c['latency_us']['p99']:.1f}",
                f"{c['latency_us']['max']:,.0f}",
                c["latency_of"],
            ]
            for c in results["cases"].values()
        ],
        console,
    )
    print_ratios(results["ratios"], console)


COLORS = {
    "kvcluster-1": "tab:blue",
    "kvcluster-default": "tab:cyan",
    "kvcluster-router": "tab:purple",
    "redis": "tab:red",
    "redis-unix": "tab:orange",
    "redis-raw": "tab:olive",
    "redis-pipeline": "tab:brown",
    "redis-asyncio": "tab:pink",
    "manager": "tab:gray",
}
GROUPS = (
    ("single", "set"),
    ("single", "get"),
    ("router", "get"),
    ("two_process", "set"),
    ("two_process", "get"),
    ("inflight", "set"),
    ("inflight", "get"),
)


def plot(path: Path, results: dict[str, Any]) -> None:
    fig = Figure(figsize=(15, 9), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg: no display needed
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    cases = list(results["cases"].values())

    # Throughput: one horizontal bar per case, grouped by workload, a gap between groups.
    y, labels, rates, colors, position = [], [], [], [], 0.0
    for workload, op in GROUPS:
        for c in (c for c in cases if (c["workload"], c["op"]) == (workload, op)):
            y.append(position)
            labels.append(f"{workload} {op}: {c['label']}")
            rates.append(c["ops_per_s"]["median"])
            colors.append(COLORS[c["peer"]])
            position += 1
        position += 0.6
    bars = left.barh(y, rates, color=colors)
    left.bar_label(bars, labels=[f"{r:,.0f}" for r in rates], padding=3, fontsize=7)
    left.set_yticks(y, labels, fontsize=7)
    left.set_xscale("log")
    left.set_xlim(left=10 ** math.floor(math.log10(min(rates))))  # one baseline for every bar
    left.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    left.invert_yaxis()
    left.set_xlabel("ops/s (median of runs, log scale)")
    left.set_title("Throughput")

    # Latency of the one-request-at-a-time cases: p50 bars, whiskers up to p99.
    single = [c for c in cases if c["workload"] in ("single", "router")]
    p50 = [c["latency_us"]["p50"] for c in single]
    p99 = [c["latency_us"]["p99"] for c in single]
    ys = range(len(single))
    right.barh(
        ys,
        p50,
        xerr=[[0] * len(single), [hi - lo for lo, hi in zip(p50, p99, strict=True)]],
        capsize=3,
        color=[COLORS[c["peer"]] for c in single],
    )
    right.set_yticks(ys, [f"{c['op']}: {c['label']}" for c in single], fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("µs per request: p50 (bar), p99 (whisker)")
    right.set_title("Latency, one client, one request at a time")
    env, params = results["environment"], results["parameters"]
    fig.suptitle(
        f"kvcluster {env['kvcluster']} (durability {params['durability']}) beside redis-server "
        f"{env['redis_server']} (AOF, everysec) and a Manager dict; {env['cpu_count']} CPUs, "
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
    parser.add_argument("--seconds", type=float, help="time budget of each case (default 3; quick 0.5)")
    parser.add_argument("--repeats", type=int, help="runs each case's budget is split into (default 3; quick 1)")
    args = parser.parse_args(argv)
    quick = args.quick
    params = Params(
        seconds=args.seconds or (0.5 if quick else 3.0),
        repeats=args.repeats or (1 if quick else 3),
        warmup=0.1 if quick else 0.2,
    )
    if params.seconds <= 0 or params.repeats < 1:
        parser.error("--seconds and --repeats must be positive")
    return params, args


def main(argv: list[str] | None = None) -> int:
    p, args = parse_args(argv)
    exit_on_sigterm()
    started = time.perf_counter()
    env = environment((*PACKAGES, "multiprocess", "dill"))
    root = tempfile.mkdtemp(prefix="kvc-cluster-bench-", dir=args.dir)
    try:
        fs = filesystem_of(root)
        console.print(
            f"cluster bench: {p.seconds} s per case in {p.repeats} run(s), {p.keys:,} keys, in {root} "
            f"({fs['type'] if fs else '?'}); load average {env['load_average'][0]:.2f}"
        )
        with contextlib.ExitStack() as stack:  # every peer is stopped on the way out, errors included
            # The Manager's server is forked from this process: fork it before any thread exists.
            authkey = secrets.token_bytes(16)
            manager = SharedDictManager(authkey=authkey)
            manager.start()
            stack.callback(manager.shutdown)
            progress("starting redis-server, two kvcluster clusters and the worker processes")
            socket_path = os.path.join(root, "redis", "redis.sock")
            server = stack.enter_context(
                redis_server(os.path.join(root, "redis"), *REDIS_ARGS, "--unixsocket", socket_path)
            )
            kv_1 = stack.enter_context(kvcluster.start(os.path.join(root, "kv-1"), shards=1, durability=p.durability))
            router = f"tcp://127.0.0.1:{free_port()}"
            kv_n = stack.enter_context(
                kvcluster.start(os.path.join(root, "kv-n"), shards=p.shards, durability=p.durability, listen=router)
            )
            spawn = multiprocess.get_context("spawn")
            pool = stack.enter_context(
                spawn.Pool(WORKERS, initializer=_init_worker, initargs=(spawn.Barrier(WORKERS),))
            )
            if not isinstance(manager.address, str):
                raise TypeError(f"expected the manager on a Unix socket, not {manager.address!r}")
            peers = {
                "kvcluster-1": Peer("kvcluster", kv_1.data_dir),
                "kvcluster-default": Peer("kvcluster", kv_n.data_dir),
                "redis": Peer("redis", f"redis://127.0.0.1:{server.port}"),
                "redis-unix": Peer("redis", f"unix://{socket_path}"),
                "manager": Peer("manager", manager.address, authkey),
            }
            cases = build_cases(stack, peers, server.port, pool, Peer("kvcluster", router), p)
            runs = measure(cases, p)
            servers = {
                "kvcluster-1": cluster_state(kv_1),
                "kvcluster-default": cluster_state(kv_n),
                "redis": redis_state(server),
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cpus = os.cpu_count() or 1
    results: dict[str, Any] = {
        "benchmark": "cluster",
        "environment": env,
        "parameters": {
            **asdict(p),
            "quick": args.quick,
            "run_seconds": p.run_seconds,
            "filesystem": fs,
            "namespace": NAMESPACE,
            "key_example": workload(p.keys)[0][0],
            "value_example": workload(p.keys)[1][0],
            "redis_args": [*REDIS_ARGS, "--save", ""],
            "worker_processes": f"{WORKERS}, multiprocess spawn Pool, started together by a Barrier",
            "inflight_mode": f"{p.inflight} tasks, each sending its next request when its last is answered",
            "manager": "SyncManager (multiprocessing.Manager's class), one registered dict, DictProxy",
            # shards poll 50 µs after a reply only where the machine has more cores than shards
            "shard_spin_us": {
                name: SPIN * 1e6 if cpus > n else 0.0
                for name, n in (("kvcluster-1", 1), ("kvcluster-default", p.shards))
            },
            "clients": "Client (Unix-socket fast path) from kvcluster.connect(data_dir), as Cluster.connect() makes",
        },
        "servers_after": servers,
        "cases": {case.name: case_result(case, runs[case.name]) for case in cases},
        "elapsed_seconds": time.perf_counter() - started,
        "load_average_end": list(os.getloadavg()),
    }
    results["ratios"] = ratios(results["cases"], p.shards)
    out = write_json(args.out, results)
    png = out.with_suffix(".png")
    progress(f"plotting to {png}")
    plot(png, results)
    print_report(results)
    console.print(f"wrote {out} and {png} in {results['elapsed_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
