"""A full disk gives StorageError — never SIGBUS, never a lost acknowledged write."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from kvtest.children import TESTS_DIR
from kvtest.tmpfs import small_tmpfs

pytestmark = [pytest.mark.crash, pytest.mark.slow]


def test_full_disk_is_a_storage_error_and_writes_resume_when_space_returns(tmp_path: object) -> None:
    with small_tmpfs(os.path.join(str(tmp_path), "mnt"), "4m") as mount:
        env = dict(os.environ, PYTHONPATH=TESTS_DIR)
        child = subprocess.run(
            [sys.executable, "-m", "kvtest.full_disk_child", mount],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert child.returncode == 0, f"child died with {child.returncode}: {child.stderr}"
    report = json.loads(child.stdout)
    assert report["acked"] > 100
    assert "No space left on device" in report["error"]
    assert report["reads_ok"]
    assert report["refused_again"]
    assert report["survived"]
    assert report["after"]
