"""Regression: a failpoint armed with `raise` at some rotation steps escaped as a raw
OSError and left journal.next (and its map) behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kvtest.children import TESTS_DIR

SCRIPT = """
import os, sys
from kvcluster import StorageError
from kvcluster.journal import VersionedStore
store = VersionedStore.open(sys.argv[1], buffer_size=4096)
ts = store.set("ns", "k", 1)
try:
    store.rotate()
except StorageError as exc:
    print("storage error:", exc)
print("archive error:", store.archive_error)
print(sorted(n for n in os.listdir(sys.argv[1]) if n != "LOCK"))
store.set("ns", "k2", 2)
store.close()
"""


@pytest.mark.parametrize(
    "point", ["rotate.begin", "rotate.old_flushed", "rotate.next_written", "rotate.old_linked", "archive.renamed"]
)
def test_raise_at_a_rotation_step_is_a_storage_error_without_debris(store_dir: str, point: str) -> None:
    """Before the switch the rotation fails; archiving failures are kept for a retry."""
    env = dict(os.environ, KV_FAILPOINTS=f"{point}=raise", PYTHONPATH=TESTS_DIR)
    child = subprocess.run(
        [sys.executable, "-c", SCRIPT, store_dir], check=False, capture_output=True, text=True, env=env
    )
    assert child.returncode == 0, child.stderr
    if point.startswith("archive."):
        assert "archive error: installing archive" in child.stdout
        assert f"failpoint {point} hit" in child.stdout
    else:
        assert "storage error: " in child.stdout
        assert f"failpoint {point} hit" in child.stdout
        assert "['journal']" in child.stdout  # no journal.next, no link left behind
