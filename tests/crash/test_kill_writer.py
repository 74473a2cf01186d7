"""kill -9 a writing process at random moments: no returned write may be lost."""

from __future__ import annotations

import random
import signal

import pytest
from kvtest import scale
from kvtest.children import State, check_survivors, run_writer

from kvcluster.journal.verify import verify_tree

pytestmark = [pytest.mark.crash, pytest.mark.slow]


@pytest.mark.parametrize("durability", ["none", "always"])
def test_kill_9_at_random_moments_loses_no_acknowledged_write(store_dir: str, durability: str) -> None:
    rng = random.Random(durability)
    state: State = {}
    cycles = scale(8, 100)
    for _ in range(cycles):
        seed = rng.randrange(1 << 30)
        run = run_writer(store_dir, seed, kill_after=rng.randint(1, 1500), durability=durability)
        assert run.returncode == -signal.SIGKILL, run.stderr
        state = check_survivors(store_dir, seed, run, state)
    assert all(report.ok for report in verify_tree(store_dir))
