"""How evenly keys spread over shards: kvcluster's jump hash beside Redis Cluster's slots.

For shard counts 2, 4, ..., 128 and two key sets (sequential `user:000000123`-style
names, and random 32-hex-digit ids), each key is placed by
  jump      kvcluster: jump consistent hash over xxh64(namespace \\0 key)
  slots     Redis Cluster: CRC16 (XMODEM) of the key mod 16384 slots, the slots split
            into equal contiguous ranges (what `redis-cli --cluster create` does)
  modulo    xxh64(key) mod n: the even-spread reference (it moves almost every key on
            a resize, which is why nobody shards by it)
  random    each key on a shard drawn at random: what chance alone gives
and the per-shard counts are reported as the largest deviation from the mean (%) and
the coefficient of variation (beside the expected one of a perfect hash: the std of a
multinomial, sqrt(N (1/n) (1 - 1/n)) keys a shard). Also: the keys that move
when growing n -> n + 1 (jump moves 1/(n+1); modulo ~n/(n+1)).

    .venv/bin/python -m bench.distribution_bench              # 1M keys, ~1 min
    .venv/bin/python -m bench.distribution_bench --keys 100000
"""

from __future__ import annotations

import argparse
import binascii
import math
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xxhash

from bench.common import environment, make_console, print_table, write_json
from kvcluster.router.jump import shards_for

console = make_console()
SHARD_COUNTS = (2, 4, 8, 16, 32, 64, 128)
REDIS_SLOTS = 16384
NAMESPACE = b"default"

Placer = Callable[[list[bytes], int], list[int]]


def jump(keys: list[bytes], shards: int) -> list[int]:
    placed: list[int] = []
    for start in range(0, len(keys), 50_000):  # below the route cache's size: nothing is remembered
        placed += shards_for(NAMESPACE, keys[start : start + 50_000], shards)
    return placed


def redis_slots(keys: list[bytes], shards: int) -> list[int]:
    # binascii.crc_hqx(key, 0) is CRC16-CCITT (XMODEM), the CRC Redis Cluster uses;
    # keys here hold no {hash tag}.
    return [binascii.crc_hqx(key, 0) % REDIS_SLOTS * shards // REDIS_SLOTS for key in keys]


def modulo(keys: list[bytes], shards: int) -> list[int]:
    digest = xxhash.xxh64_intdigest
    return [digest(key) % shards for key in keys]


def random_placement(keys: list[bytes], shards: int) -> list[int]:
    """Each key on a shard drawn at random (seeded): the spread chance alone gives, the
    floor any hash is judged against."""
    draw = random.Random(shards).randrange
    return [draw(shards) for _ in keys]


PLACERS: dict[str, Placer] = {
    "jump": jump,
    "redis_slots": redis_slots,
    "modulo": modulo,
    "random_placement": random_placement,
}


def key_sets(n: int, seed: int) -> dict[str, list[bytes]]:
    rng = random.Random(seed)
    return {
        "sequential": [f"user:{i:09d}".encode() for i in range(n)],
        "random": [rng.getrandbits(128).to_bytes(16, "big").hex().encode() for _ in range(n)],
    }


def spread(placed: list[int], shards: int) -> dict[str, Any]:
    counts = [0] * shards
    for shard in placed:
        counts[shard] += 1
    mean = len(placed) / shards
    return {
        "max_deviation_pct": 100 * max(abs(c - mean) for c in counts) / mean,
        "cv_pct": 100 * statistics.pstdev(counts) / mean,
        "min": min(counts),
        "max": max(counts),
    }


def chance_cv_pct(n: int, shards: int) -> float:
    """The coefficient of variation a perfectly random placement has, on average."""
    return 100 * math.sqrt(n * (1 / shards) * (1 - 1 / shards)) / (n / shards)


def moved_fraction(placer: Placer, keys: list[bytes], shards: int) -> float:
    before, after = placer(keys, shards), placer(keys, shards + 1)
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="bench/results/distribution.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sets = key_sets(args.keys, args.seed)
    rows: list[dict[str, Any]] = []
    for name, keys in sets.items():
        for shards in SHARD_COUNTS:
            row: dict[str, Any] = {"keys": name, "shards": shards, "chance_cv_pct": chance_cv_pct(len(keys), shards)}
            for placer_name, placer in PLACERS.items():
                row[placer_name] = spread(placer(keys, shards), shards)
            rows.append(row)
            console.print(f"{name} keys, {shards} shards: done")
    sample = sets["random"][: min(200_000, args.keys)]
    moves = [
        {"from": n, "to": n + 1, "ideal": 1 / (n + 1), "jump": moved_fraction(jump, sample, n)}
        | {"modulo": moved_fraction(modulo, sample, n)}
        for n in (2, 4, 8, 16)
    ]
    results = {
        "benchmark": "distribution",
        "environment": environment(),
        "parameters": {"keys": args.keys, "seed": args.seed, "shard_counts": list(SHARD_COUNTS)},
        "rows": rows,
        "moves": moves,
        "elapsed_seconds": time.perf_counter() - started,
    }
    out = write_json(args.out, results)
    png = out.with_suffix(".png")
    plot(png, rows)
    print_table(
        "largest deviation of a shard from the mean (%), random keys",
        ["shards", "jump (kvcluster)", "Redis Cluster slots", "xxh64 mod n", "random placement"],
        [
            [
                str(r["shards"]),
                f"{r['jump']['max_deviation_pct']:.2f}",
                f"{r['redis_slots']['max_deviation_pct']:.2f}",
                f"{r['modulo']['max_deviation_pct']:.2f}",
                f"{r['random_placement']['max_deviation_pct']:.2f}",
            ]
            for r in rows
            if r["keys"] == "random"
        ],
        console=console,
    )
    for move in moves:
        console.print(
            f"{move['from']} -> {move['to']} shards: jump moves {move['jump']:.1%} (ideal {move['ideal']:.1%}),"
            f" modulo {move['modulo']:.1%}"
        )
    console.print(f"wrote {out} and {png}")
    return 0


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for axis, key_set in zip(axes, ("sequential", "random"), strict=True):
        chosen = [r for r in rows if r["keys"] == key_set]
        shards = [r["shards"] for r in chosen]
        for placer, color, style in (
            ("jump", "tab:blue", "-"),
            ("redis_slots", "tab:red", "-"),
            ("modulo", "tab:gray", "-"),
            ("random_placement", "black", "--"),
        ):
            series = [r[placer]["max_deviation_pct"] for r in chosen]
            axis.plot(shards, series, marker="o", color=color, linestyle=style, label=placer)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("shards")
        axis.set_title(f"{key_set} keys")
        axis.legend()
    axes[0].set_ylabel("largest deviation from the mean (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
