"""Local sockets are private (bar item 18): the data directory and the socket folder
are 0700 — a socket file is only reachable through its folder — and the shards' and
the coordinator's stream sockets are 0600 besides."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kvcluster import Cluster
from kvcluster.datadir import DataDir

pytestmark = pytest.mark.slow


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_data_and_socket_folders_are_private(cluster: Cluster) -> None:
    data = DataDir.at(cluster.data_dir)
    run = os.path.realpath(data.run)  # a short private folder under /tmp when the path is long
    for folder in (data.root, data.logs, run):
        assert mode(folder) == 0o700, folder
    sockets = [entry for entry in os.scandir(run) if stat.S_ISSOCK(entry.stat().st_mode)]
    assert sockets, "the cluster's sockets live in the run folder"
    streams = [entry.path for entry in sockets if entry.name.endswith(".stream")]
    assert len(streams) >= 2  # the coordinator's and the shards'
    for path in streams:
        assert mode(path) == 0o600, path


def test_a_wide_umask_does_not_widen_a_new_data_directory(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        data = DataDir.at(str(tmp_path / "new"))
        data.prepare()
    finally:
        os.umask(old)
    for folder in (data.root, data.logs, os.path.realpath(data.run)):
        assert mode(folder) == 0o700, folder
