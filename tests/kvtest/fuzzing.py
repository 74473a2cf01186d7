"""A small coverage-blind fuzzer: mutate a corpus of valid inputs for a time budget and
feed each mutant to a target, which may only fail in the ways it declares.

Mutations are the ones that find parser bugs (AFL's havoc stage, in short): bit flips,
"interesting" bytes (0x00, 0xff, 0x7f, 0x80 and msgpack's type bytes for 32-bit
arrays, maps, strings and binaries), truncation, insertion of random or repeated
bytes, chunk duplication and splicing two inputs. Each run is reproducible from its
seed, which a failure reports together with the input in hex; a failing input then
belongs in tests/regress/ as a fixed case.
"""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["FuzzReport", "fuzz", "mutate"]

INTERESTING = (0x00, 0xFF, 0x7F, 0x80, 0xC1, 0xC4, 0xC5, 0xC6, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0x91)
MAX_INPUT = 1 << 16  # mutants grow no longer than this
SLOW_INPUT = 1.0  # seconds: an input taking longer is a failure (the bar: none over 1 s)
MEMORY_GROWTH = 256 << 20  # bytes of peak RSS a whole run may add


@dataclass
class FuzzReport:
    inputs: int
    rejected: int  # ended in one of the declared exceptions
    slowest: float
    seed: int


def mutate(data: bytes, corpus: Sequence[bytes], rng: random.Random) -> bytes:
    """One to four random mutations of `data`."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(8)
        if not buf:
            buf += rng.randbytes(rng.randint(1, 16))
            continue
        at = rng.randrange(len(buf))
        if choice == 0:
            buf[at] ^= 1 << rng.randrange(8)
        elif choice == 1:
            buf[at] = rng.choice(INTERESTING)
        elif choice == 2:
            del buf[rng.randrange(len(buf)) :]  # truncate
        elif choice == 3:
            buf[at:at] = rng.randbytes(rng.randint(1, 32))
        elif choice == 4:
            buf[at:at] = bytes([rng.choice(INTERESTING)]) * rng.randint(1, 64)
        elif choice == 5:
            end = min(len(buf), at + rng.randint(1, 64))
            buf[at:at] = buf[at:end] * rng.randint(1, 8)  # duplicate a chunk
        elif choice == 6:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:at] + other[cut:]  # splice
        else:
            for i in range(at, min(len(buf), at + 4)):
                buf[i] = rng.randrange(256)
    return bytes(buf[:MAX_INPUT])


def fuzz(
    target: Callable[[bytes], object],
    corpus: Sequence[bytes],
    seconds: float,
    allowed: tuple[type[BaseException], ...],
    seed: int | None = None,
) -> FuzzReport:
    """Feed mutants of `corpus` to `target` for `seconds`. An exception outside `allowed`,
    an input slower than SLOW_INPUT, or peak memory growing by more than MEMORY_GROWTH
    fails with AssertionError naming the seed and the input."""
    seed = random.randrange(1 << 32) if seed is None else seed
    rng = random.Random(seed)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    deadline = time.monotonic() + seconds
    inputs = rejected = 0
    slowest = 0.0
    while time.monotonic() < deadline:
        data = mutate(rng.choice(corpus), corpus, rng)
        started = time.perf_counter()
        try:
            target(data)
        except allowed:
            rejected += 1
        except Exception as exc:
            raise AssertionError(f"seed {seed}: {type(exc).__name__}: {exc} on input {data.hex()}") from exc
        took = time.perf_counter() - started
        slowest = max(slowest, took)
        if took > SLOW_INPUT:
            raise AssertionError(f"seed {seed}: input took {took:.2f} s: {data.hex()}")
        inputs += 1
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before
    if growth > MEMORY_GROWTH:
        raise AssertionError(f"seed {seed}: peak memory grew by {growth >> 20} MiB over {inputs} inputs")
    report = FuzzReport(inputs, rejected, slowest, seed)
    # shown by `pytest -rA`: what a long run's closing note records
    print(f"fuzzed {getattr(target, '__qualname__', target)}: {report}")
    return report
