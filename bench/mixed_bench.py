"""Concurrent mixed workloads: 1, 2, 4 and 8 client processes against 1, 2 and 4 shards,
beside redis-py (hiredis) and a Manager dict; durable sets from 4 processes in every
durability mode beside redis's; and the shards' CPU time per operation, the figure that
predicts scaling on more cores.

Run from the repository root:

    .venv/bin/python -m bench.mixed_bench            # full: ~7 minutes
    .venv/bin/python -m bench.mixed_bench --quick    # smoke run: ~1 minute

Workloads (10,000 keys `key:%06d`, 100-byte values, every key written first):

  mixes       read-heavy 95/5, balanced 50/50 and write-heavy 5/95 get/set, each client
              process running its own random sequence of operations one at a time;
              kvcluster (durability `interval`) with 1, 2 and 4 shards; redis-server
              with `appendfsync everysec`; the Manager dict (keeps nothing on disk).
  durability  sets only, from 4 client processes: kvcluster with `none`, `interval` and
              `always` (1 and 2 shards) beside redis with no AOF, `everysec` and `always`.
  cpu         the shards' CPU seconds (psutil, via `stats()`) over the operations they
              served, in a separate run of 8 client processes per shard count with the
              post-reply polling off (KVCLUSTER_SPIN_US=0), so the figure is work, not
              waiting; and the client processes' own CPU per operation.

Every client process connects, waits for a common start moment, runs for --seconds and
reports its operations and CPU time; throughput is their sum over the window. Each case
runs --repeats times in turns with the other peers, and the median run is kept. Results
go to bench/results/mixed.json and mixed.png.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import resource
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import multiprocess
import redis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import kvcluster
from bench.cluster_bench import Peer, SharedDictManager, connect_shared_dict
from bench.common import (
    PACKAGES,
    STARTED,
    check_target,
    environment,
    exit_on_sigterm,
    filesystem_of,
    make_console,
    print_ratios,
    print_table,
    progress,
    redis_server,
    save_results,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "mixed.json"
KEYS = 10_000
VALUE = "v" * 100
MIXES = {"95/5": 0.95, "50/50": 0.50, "5/95": 0.05}  # name -> fraction of gets
CLIENTS = (1, 2, 4, 8)
SHARDS = (1, 2, 4)
START_DELAY = 0.5  # seconds from handing out the tasks to the common start moment
REDIS_MODES = {
    "none": ("--appendonly", "no"),
    "interval": ("--appendonly", "yes", "--appendfsync", "everysec"),
    "always": ("--appendonly", "yes", "--appendfsync", "always"),
}
REDIS_LABEL = {"none": "redis in memory", "interval": "redis everysec", "always": "redis always"}

console = make_console()


@contextlib.contextmanager
def operations(peer: Peer) -> Iterator[tuple[Callable[[str], object], Callable[[str, str], object]]]:
    """(get, set) over a connection of this process's own."""
    if peer.kind == "kvcluster":
        with kvcluster.connect(peer.target) as client:
            ns = client.namespace("default")
            yield ns.get, ns.set
    elif peer.kind == "redis":
        r = redis.Redis.from_url(peer.target)
        try:
            yield r.get, r.set
        finally:
            r.close()
    else:
        shared = connect_shared_dict(peer.target, peer.authkey)
        yield shared.get, shared.__setitem__


def _client_run(task: tuple[Peer, float, int, float, float]) -> tuple[int, float, float]:
    """One client process: a random sequence of gets (fraction `reads`) and sets, from the
    common start moment for `seconds`. Returns (operations, seconds, CPU seconds)."""
    peer, reads, seed, start_at, seconds = task
    rng = random.Random(seed)
    plan = [(rng.random() < reads, f"key:{rng.randrange(KEYS):06d}") for _ in range(65_536)]
    with operations(peer) as (get, put):
        get(plan[0][1])  # connected and routed before the clock starts
        time.sleep(max(0.0, start_at - time.time()))  # the workers start together, at a moment they share
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        deadline = t0 + seconds
        done = 0
        now = t0
        while now < deadline:
            for is_read, key in plan[done & 65535 : (done & 65535) + 64]:
                if is_read:
                    get(key)
                else:
                    put(key, VALUE)
            done += 64
            now = time.perf_counter()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return done, now - t0, cpu


def run_clients(pool: Any, peer: Peer, clients: int, reads: float, seconds: float) -> dict[str, Any]:
    start_at = time.time() + START_DELAY
    tasks = [(peer, reads, secrets.randbits(32), start_at, seconds) for _ in range(clients)]
    parts: list[tuple[int, float, float]] = pool.map(_client_run, tasks, chunksize=1)
    ops = sum(part[0] for part in parts)
    window = max(part[1] for part in parts)
    return {
        "ops": ops,
        "seconds": window,
        "ops_per_s": ops / window,
        "per_client_ops_per_s": [part[0] / part[1] for part in parts],
        "client_cpu_us_per_op": sum(part[2] for part in parts) / ops * 1e6,
    }


def shard_cpu(client: kvcluster.Client) -> tuple[float, int]:
    """(CPU seconds, operations served), summed over the shards."""
    shards = client.stats()["shards"]
    return sum(s["cpu_seconds"] for s in shards), sum(s["ops_total"] for s in shards)


def preload(peer: Peer) -> None:
    with operations(peer) as (_get, put):
        for i in range(KEYS):
            put(f"key:{i:06d}", VALUE)


# -- the three parts -------------------------------------------------------------------


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, with every run's throughput beside it."""
    ordered = sorted(runs, key=lambda run: run["ops_per_s"])
    return ordered[len(ordered) // 2] | {"runs_ops_per_s": [run["ops_per_s"] for run in runs]}


def mixes(
    root: str, pool: Any, manager: Peer, seconds: float, clients: tuple[int, ...], repeats: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        peers: dict[str, Peer] = {}
        for n in SHARDS:
            cluster = stack.enter_context(kvcluster.start(os.path.join(root, f"mix-{n}"), shards=n))
            peers[f"kvcluster {n} shard{'s' if n > 1 else ''}"] = Peer("kvcluster", cluster.data_dir)
        server = stack.enter_context(redis_server(os.path.join(root, "mix-redis"), *REDIS_MODES["interval"]))
        peers["redis-py"] = Peer("redis", f"redis://127.0.0.1:{server.port}")
        peers["Manager dict"] = manager
        for name, peer in peers.items():
            progress(f"writing {KEYS:,} keys into {name}")
            preload(peer)
        for mix, reads in MIXES.items():
            for n in clients:
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in peers}
                for _ in range(repeats):  # in turns: a change in the machine's load hits every peer alike
                    for name, peer in peers.items():
                        runs[name].append(run_clients(pool, peer, n, reads, seconds))
                out.setdefault(mix, {})[str(n)] = {name: median_run(r) for name, r in runs.items()}
                line = ", ".join(f"{k} {v['ops_per_s']:,.0f}" for k, v in out[mix][str(n)].items())
                progress(f"{mix:5s} {n} client(s): {line}")
    return out


def durability(root: str, pool: Any, seconds: float, clients: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, args in REDIS_MODES.items():
        with (
            kvcluster.start(os.path.join(root, f"dur-{mode}"), shards=2, durability=mode) as cluster,
            kvcluster.start(os.path.join(root, f"dur-1-{mode}"), shards=1, durability=mode) as one_shard,
            redis_server(os.path.join(root, f"dur-redis-{mode}"), *args) as server,
        ):
            pair = {
                f"kvcluster {mode}": Peer("kvcluster", cluster.data_dir),
                f"kvcluster {mode}, 1 shard": Peer("kvcluster", one_shard.data_dir),
                REDIS_LABEL[mode]: Peer("redis", f"redis://127.0.0.1:{server.port}"),
            }
            for peer in pair.values():
                preload(peer)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in pair}
            for _ in range(repeats):
                for name, peer in pair.items():
                    runs[name].append(run_clients(pool, peer, clients, 0.0, seconds))
            out.update({name: median_run(r) for name, r in runs.items()})
            progress(
                f"sets from {clients} clients, {mode}: " + ", ".join(f"{k} {out[k]['ops_per_s']:,.0f}/s" for k in pair)
            )
    return out


def cpu(root: str, pool: Any, seconds: float, clients: int) -> dict[str, Any]:
    """Shard CPU per operation under load, with the post-reply polling off."""
    out: dict[str, Any] = {}
    previous = os.environ.get("KVCLUSTER_SPIN_US")
    os.environ["KVCLUSTER_SPIN_US"] = "0"  # inherited by the cluster's processes
    try:
        for n in SHARDS:
            with kvcluster.start(os.path.join(root, f"cpu-{n}"), shards=n) as cluster, cluster.connect() as client:
                peer = Peer("kvcluster", cluster.data_dir)
                preload(peer)
                for mix, reads in MIXES.items():
                    cpu0, ops0 = shard_cpu(client)
                    result = run_clients(pool, peer, clients, reads, seconds)
                    cpu1, ops1 = shard_cpu(client)
                    result["shard_cpu_us_per_op"] = (cpu1 - cpu0) / max(1, ops1 - ops0) * 1e6
                    result["shard_ops_counted"] = ops1 - ops0
                    out.setdefault(str(n), {})[mix] = result
                progress(
                    f"cpu, {n} shard(s): "
                    + ", ".join(f"{m} {r['shard_cpu_us_per_op']:.1f} µs/op" for m, r in out[str(n)].items())
                )
    finally:
        if previous is None:
            os.environ.pop("KVCLUSTER_SPIN_US", None)
        else:
            os.environ["KVCLUSTER_SPIN_US"] = previous
    return out


# -- report ------------------------------------------------------------------------------


def predicted_scaling(cpu_results: dict[str, Any]) -> dict[str, Any]:
    """What shard CPU per operation predicts for 1..16 shards on a machine with a core for
    every shard and enough cores for the clients: each shard serves 1e6 / (µs per op)."""
    out: dict[str, Any] = {}
    for mix in MIXES:
        per_op = cpu_results["1"][mix]["shard_cpu_us_per_op"]
        client_per_op = cpu_results["1"][mix]["client_cpu_us_per_op"]
        out[mix] = {
            "shard_cpu_us_per_op": per_op,
            "shard_cpu_us_per_op_by_shards": {n: r[mix]["shard_cpu_us_per_op"] for n, r in cpu_results.items()},
            "client_cpu_us_per_op": client_per_op,
            "one_shard_capacity_ops_per_s": 1e6 / per_op,
            "predicted_ops_per_s": {str(n): n * 1e6 / per_op for n in (1, 2, 4, 8, 16)},
            "client_processes_to_feed_8_shards": 8 * client_per_op / per_op,
        }
    return out


def ratios(results: dict[str, Any], clients: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mix in MIXES:
        for n in clients:
            row = results["mixes"][mix][str(n)]
            best = max(v["ops_per_s"] for k, v in row.items() if k.startswith("kvcluster"))
            out[f"{mix}, {n} clients: best kvcluster ÷ redis-py"] = check_target(best / row["redis-py"]["ops_per_s"])
            out[f"{mix}, {n} clients: best kvcluster ÷ Manager"] = check_target(best / row["Manager dict"]["ops_per_s"])
    dur = results["durability"]
    for mode in REDIS_MODES:
        target = 2.0 if mode == "always" else None
        out[f"sets from 4 clients, kvcluster {mode} ÷ {REDIS_LABEL[mode]}"] = check_target(
            dur[f"kvcluster {mode}"]["ops_per_s"] / dur[REDIS_LABEL[mode]]["ops_per_s"], target
        )
        out[f"sets from 4 clients, kvcluster {mode} 1 shard ÷ {REDIS_LABEL[mode]}"] = check_target(
            dur[f"kvcluster {mode}, 1 shard"]["ops_per_s"] / dur[REDIS_LABEL[mode]]["ops_per_s"], target
        )
    return out


def print_report(results: dict[str, Any], clients: tuple[int, ...]) -> None:
    names = list(next(iter(results["mixes"].values()))[str(clients[0])])
    rows = [
        [f"{mix}, {n} clients", *(f"{results['mixes'][mix][str(n)][name]['ops_per_s']:,.0f}" for name in names)]
        for mix in MIXES
        for n in clients
    ]
    print_table("ops/s, get/set mixes", ["case", *names], rows, console)
    print_table(
        "sets from 4 client processes, by durability",
        ["peer", "ops/s"],
        [[name, f"{r['ops_per_s']:,.0f}"] for name, r in results["durability"].items()],
        console,
    )
    rows = [
        [
            f"{n} shard(s), {mix}",
            f"{r['shard_cpu_us_per_op']:.1f}",
            f"{r['client_cpu_us_per_op']:.1f}",
            f"{r['ops_per_s']:,.0f}",
        ]
        for n, by_mix in results["cpu"].items()
        for mix, r in by_mix.items()
    ]
    print_table(
        "CPU per operation (8 clients, polling off)", ["case", "shard µs/op", "client µs/op", "ops/s"], rows, console
    )
    rows = [
        [
            mix,
            f"{p['one_shard_capacity_ops_per_s']:,.0f}",
            f"{p['predicted_ops_per_s']['8']:,.0f}",
            f"{p['client_processes_to_feed_8_shards']:.1f}",
        ]
        for mix, p in results["predicted_scaling"].items()
    ]
    print_table(
        "predicted (not measured): a core per shard",
        ["mix", "1 shard ops/s", "8 shards ops/s", "clients to feed 8"],
        rows,
        console,
    )
    print_ratios(results["ratios"], console)


def plot(path: Path, results: dict[str, Any], clients: tuple[int, ...]) -> None:
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(MIXES) + 1)
    for ax, mix in zip(axes, MIXES, strict=False):
        names = list(results["mixes"][mix][str(clients[0])])
        for i, name in enumerate(names):
            ys = [results["mixes"][mix][str(n)][name]["ops_per_s"] for n in clients]
            ax.plot(clients, ys, marker="o", label=name, color=f"C{i}")
        ax.set_title(f"get/set {mix}")
        ax.set_xlabel("client processes")
        ax.set_ylabel("ops/s")
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients, [str(n) for n in clients])
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    ax = axes[-1]
    dur = results["durability"]
    modes = list(REDIS_MODES)
    xs = range(len(modes))
    ax.bar(
        [x - 0.27 for x in xs],
        [dur[f"kvcluster {m}, 1 shard"]["ops_per_s"] for m in modes],
        0.27,
        label="kvcluster, 1 shard",
    )
    ax.bar(list(xs), [dur[f"kvcluster {m}"]["ops_per_s"] for m in modes], 0.27, label="kvcluster, 2 shards", color="C1")
    ax.bar(
        [x + 0.27 for x in xs], [dur[REDIS_LABEL[m]]["ops_per_s"] for m in modes], 0.27, label="redis-py", color="C3"
    )
    ax.set_xticks(list(xs), ["none / no AOF", "interval / everysec", "always / always"], fontsize="small")
    ax.set_title("sets from 4 client processes")
    ax.set_ylabel("ops/s")
    ax.legend(fontsize="small")
    fig.suptitle(f"Concurrent clients on a {os.cpu_count()}-CPU machine")
    fig.savefig(path, dpi=110)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="per case (default 1.0)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case, in turns; the median is kept")
    parser.add_argument("--quick", action="store_true", help="1, 2 and 4 clients, 0.3 s per case, one run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON path; the PNG goes beside it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = 0.3 if args.quick else args.seconds
    repeats = 1 if args.quick else args.repeats
    clients = CLIENTS[:3] if args.quick else CLIENTS
    exit_on_sigterm()
    env = environment((*PACKAGES, "multiprocess"))
    with tempfile.TemporaryDirectory(prefix="kv-mixed-bench-") as root, contextlib.ExitStack() as stack:
        authkey = secrets.token_bytes(16)
        manager = SharedDictManager(authkey=authkey)
        manager.start()  # forked from this process: before any thread exists
        stack.callback(manager.shutdown)
        if not isinstance(manager.address, str):
            raise TypeError(f"expected the manager on a Unix socket, not {manager.address!r}")
        pool = stack.enter_context(multiprocess.get_context("spawn").Pool(max(CLIENTS)))
        results: dict[str, Any] = {
            "benchmark": "mixed",
            "environment": env,
            "filesystem": filesystem_of(root),
            "parameters": {
                "keys": KEYS,
                "value_bytes": len(VALUE),
                "seconds": seconds,
                "clients": clients,
                "shards": SHARDS,
                "mixes": MIXES,
                "durability_clients": 4,
                "cpu_clients": 8,
            },
        }
        manager_peer = Peer("manager", manager.address, authkey)
        results["mixes"] = mixes(root, pool, manager_peer, seconds, clients, repeats)
        results["durability"] = durability(root, pool, seconds, 4, repeats)
        results["cpu"] = cpu(root, pool, seconds, 8)
    results["predicted_scaling"] = predicted_scaling(results["cpu"])
    results["ratios"] = ratios(results, clients)
    results["elapsed_seconds"] = time.perf_counter() - STARTED
    print_report(results, clients)
    save_results(args.out, results, functools.partial(plot, clients=clients))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
