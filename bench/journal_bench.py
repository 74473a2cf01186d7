"""Journal benchmark: the VersionedStore's appends and reopen, beside their floors and redis.

Run from the repository root (bench is a package, so run it as a module):

    .venv/bin/python -m bench.journal_bench            # full: 1,000,000 keys, 1-2 minutes
    .venv/bin/python -m bench.journal_bench --quick    # smoke run: 50,000 keys, under ~20 s

Appends: the store in each durability mode, against two floors that append the same
pre-encoded record bytes with bare syscalls: one os.write per record (A), and
os.write + os.fsync per record (B). Reopen: replaying N live keys, against redis-server
loading the same keys and values from its AOF. Results go to bench/results/journal.json
and journal.png (see --out); a table of every figure, with the targets, is printed.
MB means 10^6 bytes of journal records (or AOF) written or read.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.common import (
    check_target,
    environment,
    filesystem_of,
    make_console,
    print_ratios,
    print_table,
    progress,
    redis_info,
    redis_server,
    summary,
    write_json,
)
from kvcluster.config import DEFAULT_FLUSH_INTERVAL
from kvcluster.journal.format import HEADER_SIZE, encode_put
from kvcluster.journal.store import VersionedStore
from kvcluster.scope import Scope
from kvcluster.values import pack_value

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "journal.json"
MB = 1e6
HIGH_WATER_MARK = 0.8  # VersionedStore.open's default: a journal rotates past this fill

# Redis persists only through its AOF here: no RDB snapshots (common.redis_server adds
# --save ""), no fsync of its own, and no automatic rewrite, which would otherwise
# replace the AOF we measure by a base file part way through loading the keys.
_AOF_COMMON = ("--appendonly", "yes", "--appendfsync", "no", "--auto-aof-rewrite-percentage", "0")
AOF_ARGS = (*_AOF_COMMON, "--aof-use-rdb-preamble", "no")
PREAMBLE_ARGS = (*_AOF_COMMON, "--aof-use-rdb-preamble", "yes")
# redis logs its own load time with 1 ms resolution
AOF_LOADED = re.compile(r"DB loaded from append only file: ([0-9.]+) seconds")
REDIS_CHUNK = 10_000  # commands per pipeline round trip when loading redis

console = make_console()


@dataclass(frozen=True)
class Params:
    keys: int  # live keys replayed on reopen (and loaded into redis)
    append_records: int  # most records one append run writes (a multiple of 1000)
    append_seconds: float  # time budget of one append run: sync modes stop on it
    append_buffer: int  # buffer_size of the append stores: big enough never to rotate
    repeats: int  # runs of every append case, reopen and redis load; medians reported
    rdb_preamble: bool  # also time redis loading an AOF whose base is RDB
    namespace: str = "bench"
    flush_interval: float = DEFAULT_FLUSH_INTERVAL  # of the `interval` case


@dataclass(frozen=True)
class Workload:
    """The same keys and values for every case; `records` are their journal bytes."""

    keys: list[str]
    values: list[str]
    raw_keys: list[bytes]
    raw_values: list[bytes]  # msgpack, as the store keeps them and redis gets them
    records: list[bytes]  # encode_put of the same fields: what the floors append


def make_workload(n: int, namespace: bytes) -> Workload:
    keys = [f"key:{i:08d}" for i in range(n)]
    values = [f"value-{i:08d}" for i in range(n)]
    raw_keys = [k.encode() for k in keys]
    raw_values = [pack_value(v) for v in values]
    permanent = int(Scope.PERMANENT)
    # Every timestamp is 8 bytes, so these are byte for byte as long as the store's own.
    records = [
        encode_put(namespace, k, i + 1, permanent, v) for i, (k, v) in enumerate(zip(raw_keys, raw_values, strict=True))
    ]
    return Workload(keys, values, raw_keys, raw_values, records)


# -- appends -----------------------------------------------------------------------

Step = Callable[[int, int], None]  # writes records [lo, hi) of the workload


@dataclass(frozen=True)
class Run:
    records: int
    seconds: float
    bytes: int  # journal (or floor file) bytes the run wrote
    rotations: int = 0

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds


AppendRun = Callable[[str, Workload, Params], Run]


def timed(step: Step, limit: int, budget: float, chunk: int) -> tuple[int, float]:
    """Run `step` over [0, limit) `chunk` records at a time until the budget is spent.

    The clock is read between chunks only, so it costs nothing next to the writes.
    Returns (records written, seconds).
    """
    done = 0
    start = time.perf_counter()
    deadline = start + budget
    while done < limit:
        step(done, done + chunk)
        done += chunk
        if time.perf_counter() >= deadline:
            break
    return done, time.perf_counter() - start


def store_append(durability: str, chunk: int, group: bool = False, raw: bool = False) -> AppendRun:
    """A store case: `set` (or `set_raw`) per record; with `group`, one group per chunk."""

    def run(directory: str, work: Workload, p: Params) -> Run:
        store = VersionedStore.open(
            directory, buffer_size=p.append_buffer, durability=durability, flush_interval=p.flush_interval
        )
        try:
            ns, ns_b = p.namespace, p.namespace.encode()
            keys, values, raw_keys, raw_values = work.keys, work.values, work.raw_keys, work.raw_values
            set_, set_raw = store.set, store.set_raw

            def write(lo: int, hi: int) -> None:
                for key, value in zip(keys[lo:hi], values[lo:hi], strict=True):
                    set_(ns, key, value)

            def write_raw(lo: int, hi: int) -> None:
                for key, value in zip(raw_keys[lo:hi], raw_values[lo:hi], strict=True):
                    set_raw(ns_b, key, value)

            inner = write_raw if raw else write

            def grouped(lo: int, hi: int) -> None:
                with store.group():  # under `always`: one flush when the group exits
                    inner(lo, hi)

            before = int(store.stats()["journal_bytes"])
            done, seconds = timed(grouped if group else inner, p.append_records, p.append_seconds, chunk)
            written = int(store.stats()["journal_bytes"]) - before
            return Run(done, seconds, written, store.rotations)
        finally:
            store.close()  # its final flush is not timed: floor A never syncs either

    return run


def floor_append(fsync: bool, chunk: int) -> AppendRun:
    """A floor: the pre-encoded records appended with one os.write each (and an fsync)."""

    def run(directory: str, work: Workload, p: Params) -> Run:
        os.makedirs(directory)
        path = os.path.join(directory, "floor.log")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            records, write, sync = work.records, os.write, os.fsync

            def step(lo: int, hi: int) -> None:
                for record in records[lo:hi]:
                    write(fd, record)

            def step_sync(lo: int, hi: int) -> None:
                for record in records[lo:hi]:
                    write(fd, record)
                    sync(fd)

            done, seconds = timed(step_sync if fsync else step, p.append_records, p.append_seconds, chunk)
            return Run(done, seconds, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    return run


# name, label, run. Chunks: fast cases check the clock every 1000 records; per-record
# syncs every record, so a slow disk cannot overrun the budget.
APPEND_CASES: tuple[tuple[str, str, AppendRun], ...] = (
    ("none", "kvcluster none (set)", store_append("none", 1000)),
    ("none_set_raw", "kvcluster none (set_raw)", store_append("none", 1000, raw=True)),
    ("interval", "kvcluster interval", store_append("interval", 1000)),
    ("always_batch1", "kvcluster always, 1 per flush", store_append("always", 1)),
    ("always_batch100", "kvcluster always, group of 100", store_append("always", 100, group=True)),
    ("floor_write", "floor A: os.write", floor_append(fsync=False, chunk=1000)),
    ("floor_fsync", "floor B: os.write + fsync", floor_append(fsync=True, chunk=1)),
)


def bench_appends(root: str, work: Workload, p: Params) -> dict[str, Any]:
    runs: dict[str, list[Run]] = {name: [] for name, _, _ in APPEND_CASES}
    for rep in range(p.repeats):
        # Cases take turns, so a change in the (shared) machine's load hits them alike.
        for name, label, run in APPEND_CASES:
            progress(f"append {rep + 1}/{p.repeats}: {label}")
            directory = os.path.join(root, f"append-{name}-{rep}")
            gc.collect()  # the previous case's garbage is not this one's cost
            try:
                runs[name].append(run(directory, work, p))
            finally:
                shutil.rmtree(directory, ignore_errors=True)
    return {
        name: {
            "label": label,
            "runs": [{**asdict(r), "records_per_s": r.records_per_s, "mb_per_s": r.mb_per_s} for r in runs[name]],
            "records_per_s": summary([r.records_per_s for r in runs[name]]),
            "mb_per_s": summary([r.mb_per_s for r in runs[name]]),
            "bytes_per_record": runs[name][0].bytes / runs[name][0].records,
        }
        for name, label, _ in APPEND_CASES
    }


# -- reopen ------------------------------------------------------------------------


def journal_size_for(records: int, record_bytes: int) -> int:
    """The smallest power-of-two buffer_size (>= 1 MiB) that holds `records` in one
    journal, 10% under the high-water mark: replay then reads one file, never rotated."""
    need = (HEADER_SIZE + records * record_bytes) * 1.1 / HIGH_WATER_MARK
    size = 1 << 20
    while size < need:
        size *= 2
    return size


def _reopen_once(directory: str, buffer_size: int, keys: int) -> float:
    """Seconds to open the store; the store dies with this frame, outside the timing."""
    start = time.perf_counter()
    store = VersionedStore.open(directory, buffer_size=buffer_size)
    elapsed = time.perf_counter() - start
    try:
        if store.count() != keys or store.damage:
            raise RuntimeError(f"reopen found {store.count()} keys (expected {keys}), damage {store.damage}")
    finally:
        store.close()
    return elapsed


def bench_reopen(root: str, work: Workload, p: Params) -> dict[str, Any]:
    directory = os.path.join(root, "replay")
    buffer_size = journal_size_for(p.keys, len(work.records[0]))
    progress(f"reopen: writing {p.keys:,} keys (buffer_size {buffer_size >> 20} MiB)")
    ns = p.namespace.encode()
    with VersionedStore.open(directory, buffer_size=buffer_size, durability="none") as store:
        for key, value in zip(work.raw_keys[: p.keys], work.raw_values[: p.keys], strict=True):
            store.set_raw(ns, key, value)
        stats = store.stats()
    journals = sorted(name for name in os.listdir(directory) if name.startswith("journal"))
    seconds = []
    for rep in range(p.repeats):
        progress(f"reopen {rep + 1}/{p.repeats}")
        gc.collect()
        seconds.append(_reopen_once(directory, buffer_size, p.keys))
    journal_bytes = int(stats["journal_bytes"]) - HEADER_SIZE
    med = summary(seconds)["median"]
    return {
        "keys": p.keys,
        "buffer_size": buffer_size,
        "rotations": stats["rotations"],  # 0: the keys sit in one journal
        "journal_files": journals,
        "journal_bytes": journal_bytes,
        "seconds": summary(seconds),
        "mb_per_s": journal_bytes / MB / med,
        "records_per_s": p.keys / med,
        "page_cache": "warm (just written)",
    }


# -- redis peer --------------------------------------------------------------------


def _aof_files(directory: str) -> dict[str, int]:
    """Sizes of redis's AOF parts (base and incr; the manifest left out)."""
    aof_dir = os.path.join(directory, "appendonlydir")
    return {
        name: os.path.getsize(os.path.join(aof_dir, name))
        for name in sorted(os.listdir(aof_dir))
        if not name.endswith(".manifest")
    }


def _redis_loads(directory: str, args: tuple[str, ...], p: Params, what: str) -> dict[str, Any]:
    """Restart redis on `directory` `repeats` times: load seconds from its log, and wall."""
    logged: list[float] = []
    ready: list[float] = []
    for rep in range(p.repeats):
        progress(f"redis {what} load {rep + 1}/{p.repeats}")
        with redis_server(directory, *args) as server:
            keys = server.client.dbsize()
            ready.append(server.ready_seconds)
            found = AOF_LOADED.findall(server.log())
        if keys != p.keys or not found:
            raise RuntimeError(f"redis loaded {keys} keys (expected {p.keys}); log line found: {bool(found)}")
        logged.append(float(found[-1]))
    files = _aof_files(directory)
    size = sum(files.values())
    med = summary(logged)["median"]
    return {
        "files": files,
        "bytes": size,
        "log_seconds": summary(logged),  # "DB loaded from append only file": the primary figure
        "ready_seconds": summary(ready),  # Popen until INFO shows loading:0 (2 ms polls)
        "mb_per_s": size / MB / med,
        "records_per_s": p.keys / med,
    }


def _rewrite_aof(server_directory: str) -> None:
    """Rewrite the AOF with an RDB base, waiting until redis has installed it."""
    with redis_server(server_directory, *AOF_ARGS) as server:
        server.client.config_set("aof-use-rdb-preamble", "yes")
        server.client.bgrewriteaof()
        deadline = time.perf_counter() + 600
        while True:
            info = redis_info(server.client, "persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError("BGREWRITEAOF did not finish in 600 s")
            time.sleep(0.002)  # redis has no blocking rewrite: poll, as for readiness
        if info["aof_last_bgrewrite_status"] != "ok":
            raise RuntimeError(f"BGREWRITEAOF failed; see {server.log_path}")


def bench_redis(root: str, work: Workload, p: Params) -> dict[str, Any] | None:
    if shutil.which("redis-server") is None:
        console.print(
            "[bold yellow]redis-server is not installed: scripts/install-redis installs it. Skipping the peer."
        )
        return None
    directory = os.path.join(root, "redis")
    progress(f"redis: loading {p.keys:,} keys through pipelines of {REDIS_CHUNK:,}")
    with redis_server(directory, *AOF_ARGS) as server:
        client = server.client
        for lo in range(0, p.keys, REDIS_CHUNK):
            hi = min(lo + REDIS_CHUNK, p.keys)
            pipe = client.pipeline(transaction=False)
            for key, value in zip(work.raw_keys[lo:hi], work.raw_values[lo:hi], strict=True):
                pipe.set(key, value)
            pipe.execute()
        if client.dbsize() != p.keys:
            raise RuntimeError("redis does not hold every key it was sent")
    # Leaving the block sent SHUTDOWN NOSAVE: redis wrote and fsynced the whole AOF.
    result: dict[str, Any] = {"aof": _redis_loads(directory, AOF_ARGS, p, "AOF"), "rdb_preamble": None}
    if p.rdb_preamble:
        progress("redis: BGREWRITEAOF with an RDB preamble")
        _rewrite_aof(directory)
        result["rdb_preamble"] = _redis_loads(directory, PREAMBLE_ARGS, p, "RDB-preamble AOF")
    return result


# -- report ------------------------------------------------------------------------


def ratios(append: dict[str, Any], reopen: dict[str, Any], peer: dict[str, Any] | None) -> dict[str, Any]:
    def rate(name: str) -> float:
        return float(append[name]["records_per_s"]["median"])

    reopen_s = reopen["seconds"]["median"]
    aof = None if peer is None else peer["aof"]
    preamble = None if peer is None else peer["rdb_preamble"]
    return {
        "none_vs_write_floor": check_target(rate("none") / rate("floor_write"), 0.5, at_least=True),
        "always_batch100_vs_fsync_per_record": check_target(
            rate("always_batch100") / rate("floor_fsync"), 20, at_least=True
        ),
        "reopen_vs_redis_aof": check_target(
            None if aof is None else reopen_s / aof["log_seconds"]["median"], 1.5, at_least=False
        ),
        # for information: no target
        "none_set_raw_vs_write_floor": check_target(rate("none_set_raw") / rate("floor_write")),
        "interval_vs_write_floor": check_target(rate("interval") / rate("floor_write")),
        "always_batch1_vs_fsync_per_record": check_target(rate("always_batch1") / rate("floor_fsync")),
        "reopen_vs_redis_aof_ready": check_target(None if aof is None else reopen_s / aof["ready_seconds"]["median"]),
        "reopen_vs_redis_rdb_preamble": check_target(
            None if preamble is None else reopen_s / preamble["log_seconds"]["median"]
        ),
    }


def _span(stats: dict[str, Any], fmt: str) -> str:
    return f"{stats['min']:{fmt}}-{stats['max']:{fmt}}"


def print_report(results: dict[str, Any]) -> None:
    append, reopen, peer = results["append"], results["reopen"]["kvcluster"], results["reopen"]["redis"]
    print_table(
        "Append throughput (median of runs)",
        ["case", "runs", "records/run", "records/s", "min-max", "MB/s", "bytes/record"],
        [
            [
                case["label"],
                len(case["runs"]),
                f"{statistics.median_low(r['records'] for r in case['runs']):,}",
                f"{case['records_per_s']['median']:,.0f}",
                _span(case["records_per_s"], ",.0f"),
                f"{case['mb_per_s']['median']:.2f}",
                f"{case['bytes_per_record']:.0f}",
            ]
            for case in append.values()
        ],
        console,
    )
    rows: list[list[str | None]] = [
        [
            "kvcluster reopen (in-process)",
            f"{reopen['seconds']['median']:.3f}",
            _span(reopen["seconds"], ".3f"),
            f"{reopen['journal_bytes'] / MB:.1f}",
            f"{reopen['mb_per_s']:.1f}",
            f"{reopen['records_per_s']:,.0f}",
        ]
    ]
    for key, name in (("aof", "redis AOF"), ("rdb_preamble", "redis AOF, RDB preamble")):
        load = None if peer is None else peer[key]
        if load is None:
            rows.append([f"{name}: not measured", None, None, None, None, None])
            continue
        for figure, how in (("log_seconds", "log"), ("ready_seconds", "Popen→ready")):
            rows.append(
                [
                    f"{name} ({how})",
                    f"{load[figure]['median']:.3f}",
                    _span(load[figure], ".3f"),
                    f"{load['bytes'] / MB:.1f}",
                    f"{load['bytes'] / MB / load[figure]['median']:.1f}",
                    f"{reopen['keys'] / load[figure]['median']:,.0f}",
                ]
            )
    print_table(
        f"Reopen: {reopen['keys']:,} live keys, {results['parameters']['repeats']} runs, warm page cache",
        ["what", "seconds", "min-max", "MB", "MB/s", "records/s"],
        rows,
        console,
    )
    print_ratios(results["ratios"], console)


def plot(path: Path, results: dict[str, Any]) -> None:
    fig = Figure(figsize=(13, 5), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg: no display needed
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])

    cases = list(results["append"].values())
    rates = [c["records_per_s"]["median"] for c in cases]
    colors = ["tab:gray" if c["label"].startswith("floor") else "tab:blue" for c in cases]
    bars = left.barh([c["label"] for c in cases], rates, color=colors)
    left.bar_label(bars, labels=[f"{r:,.0f}" for r in rates], padding=3, fontsize=8)
    left.set_xscale("log")
    left.invert_yaxis()
    left.set_xlabel("records/s (median, log scale)")
    left.set_title("Append throughput")

    reopen, peer = results["reopen"]["kvcluster"], results["reopen"]["redis"]
    labels, medians, lows, highs, colors = ["kvcluster\nreopen"], [], [], [], ["tab:blue"]
    figures = [reopen["seconds"]]
    if peer is not None:
        for key, name in (("aof", "redis AOF"), ("rdb_preamble", "redis RDB\npreamble")):
            if peer[key] is not None:
                labels += [f"{name}\n(log)", f"{name}\n(Popen→ready)"]
                figures += [peer[key]["log_seconds"], peer[key]["ready_seconds"]]
                colors += ["tab:red", "tab:pink"]
    for f in figures:
        medians.append(f["median"])
        lows.append(f["median"] - f["min"])
        highs.append(f["max"] - f["median"])
    right.bar(labels, medians, yerr=[lows, highs], capsize=4, color=colors)
    right.set_ylabel("seconds (median; whiskers min-max)")
    right.set_title(f"Reopen {reopen['keys']:,} live keys")
    right.tick_params(axis="x", labelsize=8)
    fig.savefig(path, dpi=120)


# -- main --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[Params, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, help="live keys for reopen and redis (default 1,000,000; quick 50,000)")
    parser.add_argument("--quick", action="store_true", help="small sizes and short budgets: a smoke run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON path; the PNG goes beside it")
    parser.add_argument("--dir", help="where temporary files go (a fresh folder inside it, removed at the end)")
    parser.add_argument("--append-seconds", type=float, help="time budget of one append run (default 1; quick 0.2)")
    parser.add_argument("--repeats", type=int, help="runs of each measurement (default 5; quick 2)")
    parser.add_argument("--no-rdb-preamble", action="store_true", help="skip the RDB-preamble redis data point")
    args = parser.parse_args(argv)
    quick = args.quick
    params = Params(
        keys=args.keys or (50_000 if quick else 1_000_000),
        append_records=50_000 if quick else 1_000_000,
        append_seconds=args.append_seconds or (0.2 if quick else 1.0),
        append_buffer=256 << 20,
        repeats=args.repeats or (2 if quick else 5),
        rdb_preamble=not args.no_rdb_preamble,
    )
    if params.keys < 1 or params.repeats < 1 or params.append_seconds <= 0:
        parser.error("--keys, --repeats and --append-seconds must be positive")
    return params, args


def main(argv: list[str] | None = None) -> int:
    p, args = parse_args(argv)
    started = time.perf_counter()
    env = environment()
    root = tempfile.mkdtemp(prefix="kvc-journal-bench-", dir=args.dir)
    try:
        fs = filesystem_of(root)
        console.print(
            f"journal bench: {p.keys:,} keys, {p.repeats} runs, {p.append_seconds} s per append run, "
            f"in {root} ({fs['type'] if fs else '?'}); load average {env['load_average'][0]:.2f}"
        )
        if fs is not None and fs["type"] == "tmpfs":
            console.print("[bold yellow]the bench folder is on tmpfs: fsync and msync cost nothing there")
        work = make_workload(max(p.keys, p.append_records), p.namespace.encode())
        record_bytes = len(work.records[0])
        if p.append_records * record_bytes > HIGH_WATER_MARK * p.append_buffer * 0.9:
            raise SystemExit("append runs would rotate the journal: raise append_buffer")
        append = bench_appends(root, work, p)
        reopen = bench_reopen(root, work, p)
        peer = bench_redis(root, work, p)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results = {
        "benchmark": "journal",
        "environment": env,
        "parameters": {
            **asdict(p),
            "quick": args.quick,
            "filesystem": fs,
            "record_bytes": record_bytes,
            "value_bytes": len(work.raw_values[0]),
            "key_example": work.keys[0],
            "value_example": work.values[0],
            "redis_args": {"aof": list(AOF_ARGS), "rdb_preamble": list(PREAMBLE_ARGS), "pipeline": REDIS_CHUNK},
        },
        "append": append,
        "reopen": {"kvcluster": reopen, "redis": peer},
        "elapsed_seconds": time.perf_counter() - started,
        "load_average_end": list(os.getloadavg()),
    }
    results["ratios"] = ratios(append, reopen, peer)
    out = write_json(args.out, results)
    png = out.with_suffix(".png")
    progress(f"plotting to {png}")
    plot(png, results)
    print_report(results)
    console.print(f"wrote {out} and {png} in {results['elapsed_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
