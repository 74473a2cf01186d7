"""The crash-loop backoff: quick deaths in a row wait longer each time, up to a cap that
`kvcluster.start(max_restart_delay=...)` sets; a process that lived long starts afresh."""

from __future__ import annotations

from pathlib import Path

import pytest

import kvcluster
from kvcluster import InvalidRequest
from kvcluster.actors.supervision import MAX_RESTART_DELAY, STABLE_AFTER, restart_delay


def test_quick_deaths_wait_longer_each_time_up_to_the_cap() -> None:
    deaths, delays = 0, []
    for _ in range(8):
        deaths, delay = restart_delay(deaths, lived=0.1)
        delays.append(delay)
    assert delays == sorted(delays) and delays[0] < delays[-1] == MAX_RESTART_DELAY
    assert restart_delay(0, lived=0.1, cap=0.25)[1] == 0.25
    assert max(restart_delay(n, lived=0.1, cap=0.25)[1] for n in range(10)) == 0.25


def test_a_process_that_lived_long_is_restarted_at_once() -> None:
    assert restart_delay(7, lived=STABLE_AFTER + 1) == (0, 0.0)


@pytest.mark.parametrize("bad", [-1, 3601, float("nan"), "5", True])
def test_a_bad_cap_is_refused_before_anything_starts(tmp_path: Path, bad: object) -> None:
    with pytest.raises(InvalidRequest, match="max_restart_delay"):
        kvcluster.start(tmp_path / "data", shards=1, max_restart_delay=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "data" / "cluster.json").exists()
