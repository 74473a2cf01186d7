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


def test_a_cluster_on_a_full_disk_answers_storage_error_and_recovers(tmp_path: object) -> None:
    """The same through a live cluster: the shard's next journal cannot be allocated, so
    its clients get StorageError (no hang, no SIGBUS, the shard stays up), reads go on,
    and writes resume, with nothing acknowledged lost, once space is freed."""
    import kvcluster
    from kvcluster import StorageError

    with small_tmpfs(os.path.join(str(tmp_path), "mnt"), "16m") as mount:
        cluster = kvcluster.start(os.path.join(mount, "data"), shards=1, durability="always", buffer_size=256 << 10)
        try:
            namespace = cluster.connect(timeout=10.0).namespace("default")
            with cluster.connect() as client:
                pid = client.stats()["shards"][0]["pid"]
            stat = os.statvfs(mount)
            filler = os.path.join(mount, "filler")
            with open(filler, "wb") as f:
                f.write(b"\xaa" * max(0, stat.f_bavail * stat.f_frsize - (1 << 20)))  # leave about 1 MiB
            acked: dict[str, int] = {}
            error = None
            for i in range(100_000):
                try:
                    acked[f"k{i}"] = namespace.set(f"k{i}", "v" * 500)
                except StorageError as exc:
                    error = exc
                    break
            assert error is not None and "No space left on device" in str(error), error
            assert acked, "the disk was full before the first write"
            for key in list(acked)[-50:]:
                assert namespace.get_versioned(key) == ("v" * 500, acked[key])  # reads go on
            with pytest.raises(StorageError):
                namespace.set("again", "v" * 500)
            os.unlink(filler)
            after = namespace.set("after", "space freed")  # no restart needed
            with cluster.connect() as client:
                assert client.stats()["shards"][0]["pid"] == pid  # the shard never died
            assert all(namespace.get_versioned(key) == ("v" * 500, ts) for key, ts in acked.items())
            assert namespace.get_versioned("after") == ("space freed", after)
        finally:
            cluster.stop()
