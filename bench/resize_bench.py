"""Online resize of a loaded cluster: how fast keys move and what clients feel meanwhile.

One run: N keys are loaded into a cluster of F shards; a client thread runs a 50/50
get/set mix on random loaded keys (every get is checked against the value it must
hold) while `client.resize(shards=T)` grows the cluster. Reported:
  move rate   keys moved per second of the resize (new shard start included)
  moved       the fraction of keys that moved, beside the ideal 1 - F/T
  dip         client throughput (ops per 100 ms window) during the move, as a ratio
              of its median before the resize; and the slowest window
  misreads    gets that returned a wrong value or nothing (must be 0), and the key
              count after the move (must be N: a key on two shards counts twice)

    .venv/bin/python -m bench.resize_bench                  # 500k keys, 2 -> 3 and 4 -> 5
    .venv/bin/python -m bench.resize_bench --keys 100000    # quicker
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import kvcluster
from bench.common import environment, make_console, median, summary, windows, write_json
from kvcluster import BatchMode

console = make_console()
WINDOW = 0.1  # seconds per throughput sample
SETTLE = 2.0  # seconds of load measured before and after the resize
CHUNK = 2000


def value_of(i: int, generation: int) -> str:
    return f"v{generation}-{i}"


class Mix(threading.Thread):
    """50/50 gets and sets on random loaded keys; counts ops per window and checks reads."""

    def __init__(self, address: str, keys: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.address, self.keys = address, keys
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.done: list[float] = []  # completion times (perf_counter) of every op
        self.misreads = 0
        self.errors: list[str] = []
        self.written: dict[int, str] = {}

    def run(self) -> None:
        with kvcluster.connect(self.address, timeout=30.0) as client:
            space = client.namespace("default")
            draw, done = self.random.randrange, self.done
            n = 0
            while not self.stop.is_set():
                i = draw(self.keys)
                key = f"key:{i:09d}"
                try:
                    if n % 2:
                        value = value_of(i, n)
                        space.set(key, value)
                        self.written[i] = value
                    elif space.get(key) != self.written.get(i, value_of(i, 0)):
                        self.misreads += 1
                except kvcluster.KVError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                done.append(time.perf_counter())
                n += 1


def one_resize(root: str, keys: int, source: int, target: int) -> dict[str, Any]:
    data_dir = os.path.join(root, f"kv-{source}-{target}")
    with (
        kvcluster.start(data_dir, shards=source, durability="interval") as cluster,
        cluster.connect(timeout=120.0) as client,
    ):
        space = client.namespace("default")
        console.print(f"{source} -> {target} shards: loading {keys:,} keys")
        for start in range(0, keys, CHUNK):
            batch = {f"key:{i:09d}": value_of(i, 0) for i in range(start, min(keys, start + CHUNK))}
            result = space.set_many(batch, BatchMode.BEST_EFFORT)
            if result.errors:
                raise RuntimeError(f"preload failed: {next(iter(result.errors.values()))}")
        mix = Mix(str(cluster.data_dir), keys, seed=source)
        mix.start()
        time.sleep(SETTLE)  # measured: the throughput before the resize
        began = time.perf_counter()
        answer = client.resize(shards=target)
        ended = time.perf_counter()
        time.sleep(SETTLE)  # measured: the throughput after it
        mix.stop.set()
        mix.join()
        count_after = len(space)  # a key on two shards would count twice
    before = windows(mix.done, began - SETTLE, began, WINDOW)
    during = windows(mix.done, began, ended, WINDOW)
    after = windows(mix.done, ended, ended + SETTLE, WINDOW)
    rate_before = median(before) / WINDOW
    return {
        "from": source,
        "to": target,
        "keys": keys,
        "moved": answer["moved"],
        "moved_fraction": answer["moved"] / keys,
        "ideal_fraction": 1 - source / target,
        "resize_seconds": ended - began,
        "coordinator_seconds": answer["seconds"],
        "move_rate_keys_per_s": answer["moved"] / (ended - began),
        "ops_per_s": {
            "before": summary([c / WINDOW for c in before]),
            "during": summary([c / WINDOW for c in during]),
            "after": summary([c / WINDOW for c in after]),
        },
        "dip": {
            "during_median_vs_before": (median(during) / WINDOW) / rate_before,
            "slowest_window_vs_before": (min(during) / WINDOW) / rate_before,
        },
        "windows": {"before": before, "during": during, "after": after, "seconds": WINDOW},
        "misreads": mix.misreads,
        "errors": mix.errors[:20],
        "error_count": len(mix.errors),
        "count_after": count_after,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=500_000)
    parser.add_argument("--out", default="bench/results/resize.json")
    parser.add_argument("--dir", default=None, help="where the data dirs go (default: a temp dir)")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="kvc-resize-bench-", dir=args.dir)
    started = time.perf_counter()
    try:
        runs = [one_resize(root, args.keys, 2, 3), one_resize(root, args.keys, 4, 5)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results = {
        "benchmark": "resize",
        "environment": environment(),
        "parameters": {"keys": args.keys, "durability": "interval", "window_seconds": WINDOW, "mix": "50/50 get/set"},
        "runs": runs,
        "elapsed_seconds": time.perf_counter() - started,
    }
    out = write_json(args.out, results)
    png = out.with_suffix(".png")
    plot(png, runs)
    for run in runs:
        dip = run["dip"]
        console.print(
            f"{run['from']} -> {run['to']}: moved {run['moved']:,} ({run['moved_fraction']:.1%},"
            f" ideal {run['ideal_fraction']:.1%}) in {run['resize_seconds']:.2f} s"
            f" = {run['move_rate_keys_per_s']:,.0f} keys/s; client throughput during"
            f" {dip['during_median_vs_before']:.2f}x before (slowest window {dip['slowest_window_vs_before']:.2f}x);"
            f" misreads {run['misreads']}, errors {run['error_count']}, keys after {run['count_after']:,}"
        )
    console.print(f"wrote {out} and {png}")
    clean = all(run["misreads"] == 0 and run["error_count"] == 0 and run["count_after"] == args.keys for run in runs)
    return 0 if clean else 1


def plot(path: Path, runs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4), squeeze=False)
    for axis, run in zip(axes[0], runs, strict=True):
        w = run["windows"]
        series = w["before"] + w["during"] + w["after"]
        times = [i * w["seconds"] for i in range(len(series))]
        axis.plot(times, [c / w["seconds"] for c in series], color="tab:blue")
        start = len(w["before"]) * w["seconds"]
        axis.axvspan(start, start + len(w["during"]) * w["seconds"], color="tab:orange", alpha=0.2, label="resize")
        axis.set_xlabel("seconds")
        axis.set_ylabel("client ops/s (50/50 get/set)")
        axis.set_title(
            f"{run['from']} -> {run['to']} shards: {run['moved']:,} keys moved, {run['move_rate_keys_per_s']:,.0f}/s"
        )
        axis.set_ylim(bottom=0)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
