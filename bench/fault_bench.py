"""What a sick shard costs the healthy ones (reliability bar item 10).

One client process per shard of a 3-shard cluster, each running a 50/50 get/set mix on
keys of its own shard only, with a client timeout T. Measured in 100 ms windows:
  paused     shard 0 is SIGSTOPped for 2T, PAUSES times: the others' throughput during
             the pauses as a ratio of it in the equal stretches just before them
             (target >= 0.8), and how long
             shard 0's clients took to get `Timeout`, as a multiple of T (target <= 1.1)
  slow disk  every msync of shard 0 is delayed (strace -e inject=msync:delay_enter),
             under `always`: the other shards' throughput meanwhile, as a ratio

    .venv/bin/python -m bench.fault_bench            # ~40 s
    .venv/bin/python -m bench.fault_bench --quick    # ~20 s
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import kvcluster
from bench.common import check_target, environment, make_console, median, print_ratios, save_results, summary, windows
from kvcluster.router.jump import shard_for

console = make_console()
SHARDS = 3
WINDOW = 0.1  # seconds per throughput sample
TIMEOUT = 0.5  # the clients' timeout: a pause lasts 2x this
SLOW_MSYNC_US = 20_000  # the slow disk: each msync of shard 0 waits this long first


def keys_of(shard: int, count: int) -> list[str]:
    found: list[str] = []
    i = 0
    while len(found) < count:
        key = f"key-{i}"
        if shard_for(b"default", key.encode(), SHARDS) == shard:
            found.append(key)
        i += 1
    return found


def client(data_dir: str, shard: int, ready: Any, stop: Any, out: Any) -> None:
    """50/50 gets and sets on this shard's keys until `stop`; reports each op's end time
    and each Timeout's (start, end), or the exception that ended it."""
    keys = keys_of(shard, 200)
    draw = random.Random(shard).choice
    done: list[float] = []
    timeouts: list[tuple[float, float]] = []
    failure = None
    try:
        with kvcluster.connect(data_dir, timeout=TIMEOUT) as connected:
            space = connected.namespace("default")
            space.set(keys[0], 0)
            ready.put(shard)
            n = 0
            while not stop.is_set():
                now = time.perf_counter()
                try:
                    if n % 2:
                        space.set(draw(keys), n)
                    else:
                        space.get(draw(keys))
                except kvcluster.Timeout:
                    timeouts.append((now, time.perf_counter()))
                done.append(time.perf_counter())
                n += 1
    except Exception as exc:  # reported, so the run says why instead of waiting forever
        failure = f"{type(exc).__name__}: {exc}"
    out.put((shard, done, timeouts, failure))


def run_load(data_dir: str, fault: Any) -> tuple[dict[int, list[float]], dict[int, list[Any]], Any]:
    """One client process per shard; once all of them serve, run `fault()` here (its
    return value is the third result), then stop them and collect what they saw."""
    context = multiprocessing.get_context("spawn")
    ready, stop, out = context.Queue(), context.Event(), context.Queue()
    procs = [context.Process(target=client, args=(data_dir, s, ready, stop, out)) for s in range(SHARDS)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)
    faults = fault()
    stop.set()
    results = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join()
    failures = [failure for *_, failure in results if failure]
    if failures:
        raise RuntimeError(f"a client failed: {failures}")
    return {s: done for s, done, _, _ in results}, {s: t for s, _, t, _ in results}, faults


def shard_pid(cluster: kvcluster.Cluster, shard: int) -> int:
    with cluster.connect() as connected:
        return int(connected.stats()["shards"][shard]["pid"])


def paused_run(root: str, pauses: int) -> dict[str, Any]:
    lead, gap = 2.0, 1.5  # seconds of load before the first pause, and between pauses
    with kvcluster.start(os.path.join(root, "paused"), shards=SHARDS, durability="interval") as cluster:
        pid = shard_pid(cluster, 0)

        def fault() -> tuple[float, list[tuple[float, float]]]:
            started, spans = time.perf_counter(), []
            time.sleep(lead)  # the fault schedule: load runs before the first pause
            for _ in range(pauses):
                began = time.perf_counter()
                os.kill(pid, signal.SIGSTOP)
                time.sleep(2 * TIMEOUT)  # the pause itself
                os.kill(pid, signal.SIGCONT)
                spans.append((began, time.perf_counter()))
                time.sleep(gap)  # the schedule: the others recover before the next pause
            return started, spans

        done, timeouts, (started, spans) = run_load(str(cluster.data_dir), fault)
    healthy = [t for s in range(1, SHARDS) for t in done[s]]
    # each pause beside the stretch of the same length just before it: the machine's
    # other load drifts over seconds, so paired windows compare like with like
    before = [c for began, ended in spans for c in windows(healthy, 2 * began - ended, began, WINDOW)]
    during = [c for began, ended in spans for c in windows(healthy, began + WINDOW, ended, WINDOW)]
    waited = [(end - start) / TIMEOUT for start, end in timeouts[0]]
    return {
        "pauses": spans,
        "healthy_ops_per_s": {
            "before": summary([c / WINDOW for c in before]),
            "during": summary([c / WINDOW for c in during]),
        },
        "during_vs_before": median(during) / median(before),
        "slowest_window_vs_before": min(during) / median(before),
        "timeouts_on_paused_shard": len(timeouts[0]),
        "timeouts_on_healthy_shards": sum(len(timeouts[s]) for s in range(1, SHARDS)),
        "timeout_wait_over_timeout": summary(waited) if waited else None,
        "windows": {"healthy": windows(healthy, started, spans[-1][1], WINDOW), "start": started},
    }


def slow_disk_run(root: str, seconds: float) -> dict[str, Any]:
    strace = shutil.which("strace")
    if strace is None:
        return {"skipped": "strace is not installed (scripts/setup --with-strace installs it)"}
    with kvcluster.start(os.path.join(root, "slow"), shards=SHARDS, durability="always") as cluster:
        pid = shard_pid(cluster, 0)
        half = seconds / 2

        def fault() -> tuple[float, float]:
            time.sleep(half)  # the schedule: measure the healthy rate first
            tracer = subprocess.Popen(
                [
                    strace,
                    "-f",
                    "-qq",
                    "-o",
                    "/dev/null",
                    "-p",
                    str(pid),
                    "-e",
                    "trace=msync",
                    "-e",
                    f"inject=msync:delay_enter={SLOW_MSYNC_US}",
                ]
            )
            began = time.perf_counter()
            time.sleep(half - 0.5)  # the slow stretch
            tracer.terminate()
            tracer.wait()
            return began, time.perf_counter()

        done, _timeouts, (began, ended) = run_load(str(cluster.data_dir), fault)
    healthy = [t for s in range(1, SHARDS) for t in done[s]]
    before = windows(healthy, began - half, began, WINDOW)
    during = windows(healthy, began + 0.3, ended, WINDOW)  # strace attaches within the first ~0.3 s
    slow_before = windows(done[0], began - half, began, WINDOW)
    slow_during = windows(done[0], began + 0.3, ended, WINDOW)
    return {
        "msync_delay_us": SLOW_MSYNC_US,
        "during_vs_before": median(during) / median(before),
        "slow_shard_during_vs_before": median(slow_during) / median(slow_before),
        "healthy_ops_per_s": {
            "before": summary([c / WINDOW for c in before]),
            "during": summary([c / WINDOW for c in during]),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench/results/fault.json")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="kvc-fault-bench-")
    try:
        paused = paused_run(root, 2 if args.quick else 5)
        slow = slow_disk_run(root, 6.0 if args.quick else 12.0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    wait = paused["timeout_wait_over_timeout"]
    ratios = {
        "healthy shards' throughput while one is paused / before": check_target(paused["during_vs_before"], 0.8),
        "paused shard's clients: wait for Timeout / timeout (max)": check_target(
            None if wait is None else wait["max"], 1.1, at_least=False
        ),
        "healthy shards' throughput while one has a slow disk / before": check_target(
            slow.get("during_vs_before"), 0.8
        ),
    }
    results = {
        "benchmark": "fault",
        "environment": environment(),
        "parameters": {"shards": SHARDS, "timeout_s": TIMEOUT, "window_s": WINDOW, "mix": "50/50 get/set"},
        "paused": paused,
        "slow_disk": slow,
        "ratios": ratios,
    }
    save_results(Path(args.out), results, plot)
    print_ratios(ratios, console)
    return 0


def plot(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paused = results["paused"]
    series = paused["windows"]["healthy"]
    start = paused["windows"]["start"]
    fig, axis = plt.subplots(figsize=(9, 4))
    axis.plot([i * WINDOW for i in range(len(series))], [c / WINDOW for c in series], color="tab:blue")
    for n, (began, ended) in enumerate(paused["pauses"]):
        axis.axvspan(
            began - start, ended - start, color="tab:red", alpha=0.2, label="shard 0 paused" if n == 0 else None
        )
    axis.set_xlabel("seconds")
    axis.set_ylabel("ops/s of the clients of shards 1 and 2")
    axis.set_title(f"a paused shard and the others: {paused['during_vs_before']:.2f}x throughput during the pauses")
    axis.set_ylim(bottom=0)
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
