"""A crash at every step of rotation and archiving leaves a store that opens with every
acknowledged write, a history that still answers point-in-time queries, and no debris."""

from __future__ import annotations

import os
import signal
import zlib

import pytest
from kvtest import scale
from kvtest.children import Model, check_survivors, run_writer
from kvtest.writer_child import operations

from kvcluster.journal import recover_at
from kvcluster.journal.archive import list_raw_archives
from kvcluster.journal.verify import verify_tree

pytestmark = [pytest.mark.crash, pytest.mark.slow]

FAILPOINTS = [
    "rotate.begin",
    "rotate.old_flushed",
    "rotate.next_written",
    "rotate.old_linked",
    "rotate.next_installed",
    "archive.written",
    "archive.synced",
    "archive.renamed",
    "archive.raw_unlinked",
]


@pytest.mark.parametrize("point", FAILPOINTS)
def test_kill_at_each_rotation_step(store_dir: str, point: str) -> None:
    for hit in range(1, scale(3, 20) + 1):
        seed = zlib.crc32(f"{point}@{hit}".encode())  # differs per point and hit, the same every run
        directory = os.path.join(store_dir, f"hit{hit}")
        run = run_writer(directory, seed, buffer=4096, env={"KV_FAILPOINTS": f"{point}=kill@{hit}"}, limit=20_000)
        assert run.returncode == -signal.SIGKILL, f"{point} was never reached: {run.stderr}"
        check_survivors(directory, seed, run, {}, buffer=4096)

        leftovers = [n for n in os.listdir(directory) if n.endswith(".tmp") or n == "journal.next"]
        assert leftovers == []
        assert list_raw_archives(directory) == []
        assert all(report.ok for report in verify_tree(directory))

        model = Model()
        ops = operations(seed)
        for _index, ts in run.acked:
            model.apply(next(ops), ts)
        stamps = [ts for ts, _key, _value in model.history]
        for when in stamps[:: max(1, len(stamps) // 15)] + stamps[-1:]:
            recovered = {key: entry for (_ns, key), entry in recover_at(directory, when).items()}
            assert recovered == model.state_at({}, when)
