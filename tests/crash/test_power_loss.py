"""Power loss, simulated (bar item 5): a writer under `always` is killed, then every
byte of its journal past the point its store reported durable at the last
acknowledgement (what a power cut may lose: pages not yet flushed) is replaced by
zeros, by garbage, or by a torn copy of the record that was in flight. Reopened, the
store holds every acknowledged write and nothing that was never written — which holds
only if `always` flushes before it acknowledges.

Stale bytes from an earlier life of the file cannot appear: every journal is a fresh
file whose blocks posix_fallocate reserved as unwritten extents, which read as zeros
until written — the zeros case covers them."""

from __future__ import annotations

import os
import random
import signal

import pytest
from kvtest import scale
from kvtest.children import Model, State, check_survivors, run_writer
from kvtest.writer_child import operations

from kvcluster import Scope
from kvcluster.journal import VersionedStore
from kvcluster.journal.format import HEADER_SIZE, record_size
from kvcluster.journal.reader import RecordScan
from kvcluster.journal.verify import verify_tree

pytestmark = [pytest.mark.crash, pytest.mark.slow]

FLUSH_INTERVAL_US = 100_000  # durability `interval`: the journal is flushed this often
SLACK_US = 100_000  # a write waits for the next one to notice its interval passed
BUFFER = 16 << 20  # journal bytes: no rotation (which flushes everything) in the interval test


def written_end(path: str) -> int:
    """Where the records in the journal at `path` end (flushed to disk or not)."""
    with open(path, "rb") as f:
        data = f.read()
    position = HEADER_SIZE
    for _rtype, ns, key, _ts, value in RecordScan(data, path):
        position += record_size(ns, key, value)
    return position


def lose_power(path: str, cut: int, written_end: int, how: str, rng: random.Random) -> None:
    """Replace what follows `cut` the way a power cut might have left it."""
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        length = min(size - cut, max(written_end - cut, 0) + rng.randint(1, 4096))
        if how == "zeros":
            replacement = b"\0" * length
        elif how == "garbage":
            replacement = rng.randbytes(length)
        else:  # torn: the in-flight record's first bytes survive, the rest is zeros
            f.seek(cut)
            head = f.read(max(written_end - cut, 0))
            keep = rng.randrange(len(head)) if head else 0
            replacement = head[:keep] + b"\0" * (length - keep)
        f.seek(cut)
        f.write(replacement)
        f.flush()
        os.fsync(f.fileno())


@pytest.mark.parametrize("how", ["zeros", "garbage", "torn"])
def test_always_loses_no_acknowledged_write_in_a_power_cut(store_dir: str, how: str) -> None:
    rng = random.Random(how)
    state: State = {}
    for _ in range(scale(6, 60)):
        seed = rng.randrange(1 << 30)
        run = run_writer(store_dir, seed, kill_after=rng.randint(1, 600), durability="always")
        assert run.returncode == -signal.SIGKILL, run.stderr
        path = os.path.join(store_dir, "journal")
        # The cut falls where the child's store said its journal was durable at the
        # last acknowledgement: every page after it may be lost.
        lose_power(path, run.durable, written_end(path), how, rng)
        state = check_survivors(store_dir, seed, run, state)
    assert all(report.ok for report in verify_tree(store_dir))


def test_interval_loses_at_most_the_last_interval_in_a_power_cut(store_dir: str) -> None:
    """Under `interval` a power cut may take the writes of the last flush interval
    (100 ms), never older ones: what reopens is the model at some moment T, and T is
    within an interval (plus a little scheduling slack) of the last acknowledgement."""
    rng = random.Random("interval")
    state: State = {}
    for _ in range(scale(6, 60)):
        seed = rng.randrange(1 << 30)
        # a slow writer (2 ms between writes) into a journal too big to rotate: the last
        # interval spans ~50 writes, and nothing but the interval flushes the rest
        run = run_writer(
            store_dir, seed, kill_after=rng.randint(100, 400), durability="interval", buffer=BUFFER, pause=0.002
        )
        assert run.returncode == -signal.SIGKILL, run.stderr
        path = os.path.join(store_dir, "journal")
        lose_power(path, run.durable, written_end(path), "garbage", rng)
        model = Model(state)
        ops = operations(seed)
        for _index, ts in run.acked:
            model.apply(next(ops), ts)
        with VersionedStore.open(store_dir, buffer_size=BUFFER) as store:
            actual: State = dict(store.items("ns", scope=Scope.PERMANENT))
            moment = store.last_timestamp
        assert actual == model.state_at(state, moment), "the store is not the model at any one moment"
        stamps = [ts for _index, ts in run.acked if ts is not None]
        if stamps:
            assert max(stamps) - moment <= FLUSH_INTERVAL_US + SLACK_US, "more than one interval was lost"
        state = actual
