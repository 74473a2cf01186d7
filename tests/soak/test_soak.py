"""The soak (bar item 19): its judgements on hand-made input, and a short run of the whole
thing (a real cluster, client processes, a fault every few seconds) that must end green.
With KV_LONG=1 the run is the bar's: 60 minutes, a fault every 30 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kvtest import scale
from kvtest.linearizability import Operation
from soak import Histories
from soak_client import KeyModel, Write, make_value
from soak_watch import Sample, judge_flat

ROOT = Path(__file__).resolve().parents[2]
SOAK_SECONDS = scale(25, 3600)
FAULT_EVERY = scale(4, 30)


def series(anon: list[int], fds: list[int] | None = None) -> list[Sample]:
    fds = fds or [20] * len(anon)
    return [Sample(float(t), 1, a + (50 << 20), a, f) for t, (a, f) in enumerate(zip(anon, fds, strict=True))]


def test_flatness_passes_a_flat_series_and_flags_growth() -> None:
    mib = 1 << 20
    noisy = [30 * mib + (i % 3) * mib // 2 for i in range(40)]
    assert judge_flat("shard-0", series(noisy), warmup_end=8).flat is True
    growing = [30 * mib + i * mib // 2 for i in range(40)]  # a leak: +0.5 MiB a sample
    verdict = judge_flat("shard-0", series(growing), warmup_end=8)
    assert verdict.flat is False and "anonymous RSS" in verdict.why
    leaking_fds = [20 + i for i in range(40)]
    verdict = judge_flat("coordinator", series([30 * mib] * 40, leaking_fds), warmup_end=8)
    assert verdict.flat is False and "open fds" in verdict.why
    # growth during the warm-up (caches filling, the first journal pages) does not count
    warming = [10 * mib + min(i, 10) * 2 * mib for i in range(40)]
    assert judge_flat("client-0", series(warming), warmup_end=10).flat is True
    assert judge_flat("client-0", series(growing[:10]), warmup_end=8).flat is None  # too few to judge


def test_a_window_is_checked_only_after_every_client_handed_over_its_last_chunk() -> None:
    """Clients send a window in chunks (their memory stays bounded); the runner must not
    check the window on a middle chunk, or it would judge half a history."""
    histories = Histories(clients=2)

    def ops(client: int, value: str, called: int) -> list[Operation]:
        return [Operation(client, "set", "k", value, None, called, called + 1)]

    histories.add(0, 0, ops(0, "a", 10), last=False)
    histories.add(1, 0, ops(1, "b", 20), last=True)
    histories.check_ready()
    assert histories.windows == 0  # client 0 is still in window 0
    histories.add(0, 0, ops(0, "c", 30), last=True)
    histories.check_ready()
    assert (histories.windows, histories.operations, histories.violations) == (1, 3, 0)


def test_key_model_allows_what_may_be_and_flags_what_may_not() -> None:
    key = "c0:1"
    first, second, third = (make_value(0, key, seq) for seq in (1, 2, 3))
    model = KeyModel(0, key)
    assert model.observe(None) is None  # never written
    model.issued = 1
    model.acknowledged(Write(first, 100))
    assert model.observe(first, 100) is None
    lost = model.observe(None)
    assert lost is not None and "lost" in lost
    assert "acknowledged at ts 100" in (model.observe(first, 99) or "")
    model.issued = 3
    model.unknown(Write(second))  # timed out: may or may not have applied
    model.unknown(Write(third))
    assert model.observe(first) is None
    assert model.observe(third, 300) is None  # the later one took effect...
    stale = model.observe(second)  # ...so the earlier one cannot come after it
    assert stale is not None and "superseded" in stale
    invented = model.observe(make_value(0, key, 7))
    assert invented is not None and "never written" in invented
    foreign = model.observe(make_value(1, key, 1))
    assert foreign is not None and "never written to this key" in foreign
    assert model.deleted(existed=True) is None
    assert model.deleted(existed=True) is not None  # nothing was there to delete


def test_the_script_runs_the_soak() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "soak"), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--minutes" in result.stdout and "--fault-every" in result.stdout


@pytest.mark.slow
@pytest.mark.crash
@pytest.mark.timeout(SOAK_SECONDS + 300)
def test_a_short_soak_ends_green(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    command = [
        sys.executable,
        str(ROOT / "tests" / "soak" / "soak.py"),
        f"--minutes={SOAK_SECONDS / 60}",
        f"--fault-every={FAULT_EVERY}",
        "--seed=4",  # its shuffle draws the three process faults first: pause, kill-coordinator, kill-shard
        f"--json={summary_file}",
    ]
    if SOAK_SECONDS < 60:  # the short run: more samples, windows and sweeps than the defaults give
        command += ["--clients=3", "--timeout=1", "--sample-every=1", "--history-window=5", "--checkpoint-every=3"]
    tests = str(ROOT / "tests")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests, str(ROOT / "tests" / "soak")]))
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=SOAK_SECONDS + 240, check=False)
    output = result.stdout[-6000:] + result.stderr[-3000:]
    assert summary_file.exists(), output
    summary = json.loads(summary_file.read_text())
    assert result.returncode == 0 and summary["green"], output
    faults = summary["faults"]
    assert sum(faults.values()) >= 4, faults
    assert faults["pause-shard"] and faults["kill-coordinator"] and faults["kill-shard"], faults
    checker = summary["checker"]
    assert checker["own_reads_checked"] > 1000 and checker["own_violations"] == 0
    assert checker["windows_checked"] >= 3 and checker["linearizability_violations"] == 0
    for role in ("coordinator", "supervisor", "shard-0", "shard-1", "shard-2", "client-0"):
        assert summary["processes"][role]["flat"] is True, summary["processes"][role]
    assert summary["ops_total"] > 1000
