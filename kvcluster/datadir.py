"""The data directory: where each file of a cluster lives, and the manifest `cluster.json`.

    DATA/cluster.json           manifest: shard count, epoch, endpoints, namespaces
    DATA/kvcluster.pid          pid of the running supervisor, locked while it runs
    DATA/coordinator/           the coordinator's own state
    DATA/shard-NNN/             one shard's journal and archives
    DATA/run/                   ipc sockets and pid files, mode 0700
    DATA/logs/                  one log file per process

Unix socket paths are limited to 107 bytes. When DATA/run/... would be longer, the
sockets live in a private 0700 directory under the system's temp dir instead, and
DATA/run is a symlink to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvcluster.config import Retention
from kvcluster.errors import ClusterUnavailable, StorageError

__all__ = ["CLUSTER_FORMAT", "DataDir", "PidLock", "adopt_retention", "write_json_atomically"]

CLUSTER_FORMAT = 1
_SUN_PATH_MAX = 107
_LONGEST_SOCKET_NAME = "coordinator.sock"


@dataclass(frozen=True)
class DataDir:
    """Paths inside one cluster's data directory."""

    root: str

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> DataDir:
        return cls(os.path.abspath(os.fspath(path)))

    @property
    def manifest(self) -> str:
        return os.path.join(self.root, "cluster.json")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.root, "kvcluster.pid")

    @property
    def coordinator_dir(self) -> str:
        return os.path.join(self.root, "coordinator")

    @property
    def logs(self) -> str:
        return os.path.join(self.root, "logs")

    @property
    def run(self) -> str:
        return os.path.join(self.root, "run")

    def shard_dir(self, shard: int) -> str:
        return os.path.join(self.root, f"shard-{shard:03d}")

    def log_file(self, name: str) -> str:
        return os.path.join(self.logs, f"{name}.log")

    def endpoint(self, name: str) -> str:
        """The ipc endpoint of a process's socket (`coordinator`, `shard-000`, ...)."""
        return f"ipc://{os.path.join(self.run, name + '.sock')}"

    def stream(self, name: str) -> str:
        """The Unix socket path of a process's local fast path (a shard's, the coordinator's)."""
        return os.path.join(self.run, name + ".stream")

    def shard_name(self, shard: int) -> str:
        return f"shard-{shard:03d}"

    def prepare(self) -> None:
        """Create the directories (0700) and a socket directory with short enough paths."""
        for path in (self.root, self.coordinator_dir, self.logs):
            os.makedirs(path, mode=0o700, exist_ok=True)
        if os.path.islink(self.run) and not os.path.isdir(self.run):
            os.unlink(self.run)  # its target was a temp dir, cleared since (a reboot)
        if os.path.isdir(self.run):
            return
        if len(os.path.join(self.run, _LONGEST_SOCKET_NAME)) <= _SUN_PATH_MAX:
            os.makedirs(self.run, mode=0o700, exist_ok=True)
            return
        digest = hashlib.sha256(self.root.encode()).hexdigest()[:16]
        private = os.path.join(tempfile.gettempdir(), f"kvcluster-{os.getuid()}", digest)
        os.makedirs(private, mode=0o700, exist_ok=True)
        os.chmod(os.path.dirname(private), 0o700)
        os.symlink(private, self.run)

    def read_manifest(self) -> dict[str, Any]:
        try:
            with open(self.manifest, encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            raise ClusterUnavailable(f"no cluster at {self.root} (no cluster.json)") from None
        except (OSError, ValueError) as exc:
            raise StorageError(f"{self.manifest} is unreadable: {exc}", path=self.manifest) from None
        if not isinstance(manifest, dict) or manifest.get("format") != CLUSTER_FORMAT:
            raise StorageError(f"{self.manifest} is not a kvcluster manifest of format {CLUSTER_FORMAT}")
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomically(self.manifest, {**manifest, "format": CLUSTER_FORMAT})


def adopt_retention(manifest: dict[str, Any], configured: Mapping[str, Any] | None) -> bool:
    """Settle `manifest["retention"]`: the limits `configured` names, over those recorded
    (the defaults for a manifest that has none). Returns True if the manifest changed."""
    recorded = manifest.get("retention")
    settled = Retention.from_dict(configured, Retention.from_dict(recorded)).to_dict()
    manifest["retention"] = settled
    return settled != recorded


def write_json_atomically(path: str, data: Any) -> None:
    """Replace `path` with `data` as JSON: temp file, fsync, rename, fsync the directory."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class PidLock:
    """DATA/kvcluster.pid, locked by the running supervisor: one cluster per directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ClusterUnavailable(
                f"a cluster is already running on {os.path.dirname(self.path)} (pid {self.read()})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1

    def read(self) -> int | None:
        """The pid written in the file, if any (whether or not it still runs)."""
        try:
            with open(self.path, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def held_elsewhere(self) -> bool:
        """True while some process holds the lock: a cluster runs on this directory."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
