"""A child process that writes to a store until it is killed, acknowledging each write.

    python -m kvtest.writer_child DIR SEED [--durability MODE] [--buffer BYTES] [--limit N] [--pause S]

Each operation comes from `operations(SEED)`, so the parent can replay the same
sequence; after an operation returns, one line goes to stdout (and is flushed):
``<index> <ts or -> <durable position>``. A line received by the parent is an
acknowledged write; the durable position is how much of the active journal was on
disk then (what a power cut would leave).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator

from kvcluster.journal import VersionedStore

Operation = tuple[str, str, object]  # ("set" | "delete" | "rotate", key, value)


def operations(seed: int, keys: int = 64) -> Iterator[Operation]:
    rng = random.Random(seed)
    index = 0
    while True:
        roll = rng.random()
        key = f"k{rng.randrange(keys)}"
        if roll < 0.8:
            yield "set", key, {"seed": seed, "op": index, "pad": "x" * rng.randrange(200)}
        elif roll < 0.98:
            yield "delete", key, None
        else:
            yield "rotate", "", None
        index += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("seed", type=int)
    parser.add_argument("--durability", default="none")
    parser.add_argument("--buffer", type=int, default=1 << 16)
    parser.add_argument("--limit", type=int, default=10**9)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between writes (a slow writer)")
    args = parser.parse_args()
    out = sys.stdout
    with VersionedStore.open(args.directory, buffer_size=args.buffer, durability=args.durability) as store:
        out.write("ready\n")
        out.flush()
        for index, (op, key, value) in enumerate(operations(args.seed)):
            if index >= args.limit:
                break
            ts: int | None = None
            if op == "set":
                ts = store.set("ns", key, value)
            elif op == "delete":
                ts = store.delete("ns", key)
            else:
                store.rotate()
            out.write(f"{index} {ts if ts is not None else '-'} {store.durable_position}\n")
            out.flush()
            if args.pause:
                time.sleep(args.pause)  # pacing the workload: 100 ms then spans a few writes


if __name__ == "__main__":
    main()
