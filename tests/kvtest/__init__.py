"""Shared test machinery, and the fault toolkit the reliability tests are built from:

- process_faults  find a cluster's processes; kill -9 or SIGSTOP one, chosen or at random
- kvcluster.failpoints.arm  kill (or fail) whichever process first reaches a named point
- syscall_faults  the kernel fails the N-th msync/fsync/rename/fallocate (strace inject)
- faults          failures through the journal's filesystem seam; byte surgery on files
- tmpfs           a small tmpfs for full-disk runs (skips where mounting is refused)
- prefix          writers whose recovered state must be a gap-free prefix of their writes
- linearizability a per-key Wing-Gong checker for histories with unknown outcomes
- fuzzing         a seeded mutation fuzzer with time and memory bounds
- children        writer processes killed at random moments, checked against a model

`scale(ci, long)` is the CI/long switch (KV_LONG=1)."""

from __future__ import annotations

import os

LONG = os.environ.get("KV_LONG") == "1"


def scale(ci: int, long: int) -> int:
    """How many cycles a fault loop runs: `ci` by default, `long` under KV_LONG=1."""
    return long if LONG else ci
