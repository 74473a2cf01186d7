"""`kvcluster bench`: it runs, writes its JSON and plot, reports missing peers, stops what
it started, and refuses bad options. No timing is asserted: only that figures exist."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from kvcluster.cli import main
from kvcluster.errors import InvalidRequest
from kvcluster.quickbench import WORKLOADS, Params, plan

KVCLUSTER = os.path.join(os.path.dirname(sys.executable), "kvcluster")
QUICK = ["bench", "--seconds", "0.2", "--keys", "200"]
BATCH_ROWS = ("set_many", "get_many")


def check_measured(results: dict[str, Any], peer: str, workloads: tuple[str, ...]) -> None:
    for workload in workloads:
        case = results[peer][workload]
        assert case["ops_per_s"] > 0 and case["p50_us"] > 0 and case["requests"] > 0, (peer, workload, case)


def servers_here() -> dict[int, str]:
    """Servers among this process's children (pid -> command line)."""
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            if child.status() != psutil.STATUS_ZOMBIE and ("redis-server" in cmdline or "supervisor" in cmdline):
                found[child.pid] = cmdline
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.slow
def test_bench_writes_json_and_plot(tmp_path: Path) -> None:
    before = servers_here()  # e.g. a session's Redis Cluster fixture: not the command's to stop
    result = CliRunner().invoke(main, [*QUICK, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "kvcluster ÷ best peer" in result.output
    data = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert data["parameters"]["seconds"] == 0.2 and data["parameters"]["keys"] == 200
    assert {"python", "platform", "cpu_count", "packages"} <= data["environment"].keys()
    results = data["results"]
    check_measured(results, "kvcluster", tuple(WORKLOADS))
    single = tuple(w for w in WORKLOADS if w not in BATCH_ROWS)
    check_measured(results, "manager", single)
    assert all(results["manager"][w]["ops_per_s"] is None for w in BATCH_ROWS)  # no batch request
    assert data["ratios"]["set"]["kvcluster_over"]["manager"] > 0
    if shutil.which("redis-server"):
        assert data["peers"]["redis"]["available"], data["peers"]["redis"]
        check_measured(results, "redis", tuple(WORKLOADS))
    left = {pid: cmdline for pid, cmdline in servers_here().items() if pid not in before}
    assert left == {}, "peers the command started and did not stop"


@pytest.mark.slow
def test_bench_without_redis_server_on_path(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # the venv's bin only
    done = subprocess.run(
        [KVCLUSTER, *QUICK, "--out", str(tmp_path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # --json: stdout holds the JSON and nothing else
    assert data == json.loads((tmp_path / "bench.json").read_text())
    redis = data["peers"]["redis"]
    assert redis["available"] is False and "PATH" in redis["reason"]
    assert "redis" not in data["results"]
    check_measured(data["results"], "kvcluster", tuple(WORKLOADS))
    check_measured(data["results"], "manager", ("set", "get"))


def test_no_redis_is_reported_as_not_available() -> None:
    redis = plan(Params(redis=False))["redis"]
    assert not redis.available and redis.reason and "--no-redis" in redis.reason


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seconds", "0"], "--seconds"),
        (["--seconds", "-1"], "--seconds"),
        (["--seconds", "nan"], "--seconds"),
        (["--keys", "99"], "--keys"),
        (["--seconds", "soon"], "--seconds"),
    ],
)
def test_bad_options_exit_nonzero_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["bench", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "Invalid value" in result.output and message in result.output
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_params_refuse_what_the_cli_refuses() -> None:
    with pytest.raises(InvalidRequest):
        Params(seconds=0)
    with pytest.raises(InvalidRequest):
        Params(keys=99)
