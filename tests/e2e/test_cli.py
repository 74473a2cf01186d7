"""The CLI from a fresh directory: start, status, get/set/del, rotate, stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

KVCLUSTER = os.path.join(os.path.dirname(sys.executable), "kvcluster")


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KVCLUSTER, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120, check=False
    )


def test_start_status_use_stop_from_a_fresh_directory(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    started = cli("start", "--shards", "2", data_dir=data)
    assert started.returncode == 0, started.stderr
    assert "kvcluster is running on" in started.stdout
    try:
        assert cli("start", data_dir=data).returncode == 1  # one cluster per directory
        ts = cli("set", "default", "u:1", '{"name": "Alice"}', data_dir=data)
        assert ts.returncode == 0
        assert int(ts.stdout) > 0
        assert cli("get", "default", "u:1", data_dir=data).stdout.strip() == '{"name": "Alice"}'
        assert cli("set", "default", "n", "42", data_dir=data).returncode == 0
        assert cli("get", "default", "n", data_dir=data).stdout.strip() == "42"
        assert cli("set", "default", "s", "42", "--string", data_dir=data).returncode == 0
        assert cli("get", "default", "s", data_dir=data).stdout.strip() == '"42"'
        missing = cli("get", "default", "nope", data_dir=data)
        assert missing.returncode == 1
        assert "not found" in missing.stderr
        assert "NamespaceNotFound" in cli("get", "nope", "k", data_dir=data).stderr
        status = json.loads(cli("status", "--json", data_dir=data).stdout)
        assert status["data_dir"] == str(data)
        assert [shard["id"] for shard in status["shards"]] == [0, 1]
        assert status["namespaces"] == ["default"]
        table = cli("status", data_dir=data)
        assert table.returncode == 0
        assert "shard" in table.stdout
        assert cli("rotate", data_dir=data).returncode == 0
        assert cli("del", "default", "u:1", data_dir=data).returncode == 0
        assert cli("del", "default", "u:1", data_dir=data).returncode == 1
    finally:
        stopped = cli("stop", data_dir=data)
    assert stopped.returncode == 0, stopped.stderr
    assert cli("status", data_dir=data).returncode == 1
    assert cli("stop", data_dir=data).returncode == 1
    assert os.path.exists(data / "shard-000" / "journal")
    assert os.path.exists(data / "logs" / "coordinator.log")
