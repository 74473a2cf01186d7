"""Pieces every benchmark shares: environment capture, statistics, JSON results,
a throwaway redis-server, and rich tables.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rich.console import Console
from rich.table import Table

import kvcluster
from kvcluster.quickbench import free_port

__all__ = [
    "RedisServer",
    "check_target",
    "environment",
    "exit_on_sigterm",
    "filesystem_of",
    "free_port",
    "make_console",
    "median",
    "percentile",
    "print_ratios",
    "print_table",
    "progress",
    "redis_info",
    "redis_server",
    "redis_server_version",
    "save_results",
    "summary",
    "write_json",
]

PACKAGES = ("msgpack", "redis", "hiredis", "matplotlib", "rich", "pyzmq")


# -- environment -------------------------------------------------------------------


def environment(packages: Iterable[str] = PACKAGES) -> dict[str, Any]:
    """What a result depends on besides the code: interpreter, machine, versions, load."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        # the machine may be shared: a high load average explains noisy figures
        "load_average": list(os.getloadavg()),
        "kvcluster": kvcluster.__version__,
        "git": _git_state(),
        "packages": versions,
        "redis_server": redis_server_version(),
    }


def _git_state() -> dict[str, Any] | None:
    """The checkout measured: its commit, and the files changed since (None outside git)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        return {"commit": git("rev-parse", "HEAD").strip(), "changed": git("status", "--porcelain").splitlines()}
    except (OSError, subprocess.CalledProcessError):
        return None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def filesystem_of(path: str) -> dict[str, str] | None:
    """Mount point, device and type of the filesystem holding `path` (fsync costs depend on it)."""
    real = os.path.realpath(path)
    best: list[str] | None = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and (best is None or len(mount) >= len(best[1])):
                best = [device, mount, fstype]
    return None if best is None else {"device": best[0], "mount": best[1], "type": best[2]}


def redis_server_version(executable: str = "redis-server") -> str | None:
    """`7.0.15` from `redis-server --version`, or None when it is not installed."""
    path = shutil.which(executable)
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else out.strip() or None


def exit_on_sigterm() -> None:
    """Let SIGTERM unwind like ^C: every peer is stopped and temporary folders removed."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# -- statistics --------------------------------------------------------------------


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between the closest ranks."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Raw samples with their median, min and max, as stored in results."""
    return {
        "samples": list(samples),
        "median": median(samples),
        "min": min(samples),
        "max": max(samples),
    }


def windows(done: Sequence[float], start: float, end: float, width: float) -> list[int]:
    """How many of the times in `done` fall in each `width`-second window of [start, end):
    throughput over time, from the completion time of every operation."""
    counts = [0] * max(1, int((end - start) / width))
    for t in done:
        slot = int((t - start) / width)
        if 0 <= slot < len(counts):
            counts[slot] += 1
    return counts


def check_target(value: float | None, target: float | None = None, at_least: bool = True) -> dict[str, Any]:
    """A ratio against its target. `met` is None when either is missing (not measured, or
    a figure reported for information only)."""
    if target is None:
        return {"value": value, "target": None, "op": None, "met": None}
    met = None if value is None else (value >= target if at_least else value <= target)
    return {"value": value, "target": target, "op": ">=" if at_least else "<=", "met": met}


# -- results -----------------------------------------------------------------------


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write `data` as indented JSON, atomically (a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(target)
    return target


def save_results(path: Path, results: Any, plot: Callable[[Path, Any], None]) -> None:
    """Write the JSON results to `path` and their plot beside it (same name, .png)."""
    out = write_json(path, results)
    plot(out.with_suffix(".png"), results)
    make_console().print(f"wrote {out} and {out.with_suffix('.png')}")


def make_console() -> Console:
    """A rich console. Off a terminal (a pipe, a log) it is 140 columns wide rather
    than rich's 80, so table rows are not folded."""
    return Console() if sys.stdout.isatty() else Console(width=140)


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    console: Console | None = None,
) -> None:
    """A rich table; every column after the first is right-aligned (they hold figures)."""
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*("—" if cell is None else str(cell) for cell in row))
    (console or make_console()).print(table)


STARTED = time.perf_counter()  # when the benchmark (this module's first import) started


@functools.cache
def _progress_console() -> Console:
    return make_console()


def progress(message: str) -> None:
    """A dim line with the seconds since the benchmark started: where a long run is."""
    _progress_console().print(f"[dim]{time.perf_counter() - STARTED:7.1f} s  {message}[/dim]")


def print_ratios(ratios: dict[str, dict[str, Any]], console: Console | None = None) -> None:
    """A table of `check_target` results: each ratio's value, its target and whether it is met."""
    print_table(
        "Ratios",
        ["ratio", "value", "target", "met"],
        [
            [
                name,
                None if r["value"] is None else f"{r['value']:.3f}",
                None if r["target"] is None else f"{r['op']} {r['target']}",
                {True: "[green]yes[/green]", False: "[red]NO[/red]", None: "—"}[r["met"]],
            ]
            for name, r in ratios.items()
        ],
        console,
    )


# -- redis-server ------------------------------------------------------------------


def redis_info(client: redis.Redis, section: str) -> dict[str, Any]:
    info: dict[str, Any] = client.info(section)  # redis-py types replies as Any
    return info


@dataclass
class RedisServer:
    """A running redis-server started by `redis_server`."""

    process: subprocess.Popen[bytes]
    port: int
    directory: str
    log_path: str
    log_offset: int  # size of the log before this start: what follows is this run's
    ready_seconds: float = math.nan  # from Popen until INFO showed loading:0
    client: redis.Redis = field(init=False)

    def __post_init__(self) -> None:
        # No retries: redis-py >= 6 retries connection errors with backoffs of seconds,
        # which would stretch both the readiness polls and SHUTDOWN (whose reply is EOF).
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=120, retry=Retry(NoBackoff(), 0))

    def log(self) -> str:
        """What this server has logged since it started."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        """SHUTDOWN NOSAVE (the AOF, if on, is flushed and fsynced), killing it if that fails."""
        if self.process.poll() is None:
            with contextlib.suppress(redis.RedisError):
                self.client.shutdown(nosave=True)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.client.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def redis_server(
    directory: str,
    *args: str,
    executable: str = "redis-server",
    ready_timeout: float = 600.0,
) -> Iterator[RedisServer]:
    """Start redis-server on a free local port in `directory` and wait until it has loaded.

    `args` are extra config options (`"--appendonly", "yes"`, ...). RDB snapshots are
    off unless `args` turn them back on. The server is always stopped on exit: politely
    first, then killed.
    """
    path = shutil.which(executable)
    if path is None:
        raise FileNotFoundError(f"{executable} is not installed; scripts/install-redis installs it")
    os.makedirs(directory, exist_ok=True)
    port = free_port()
    log_path = os.path.join(directory, "redis.log")
    log_offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    command = [path, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory]
    command += ["--logfile", log_path, "--daemonize", "no", "--save", "", *args]
    # Errors before the logfile opens (a bad option) go to stdout/stderr: keep them too.
    with open(log_path + ".out", "ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    server = RedisServer(process, port, directory, log_path, log_offset)
    try:
        deadline = started + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}; see {log_path}(.out)")
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                # INFO is answered while loading (redis serves events between chunks)
                if int(redis_info(server.client, "persistence")["loading"]) == 0:
                    break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"redis-server not ready after {ready_timeout} s")
            time.sleep(0.002)  # polling is the only way to see readiness; 2 ms keeps the error small
        server.ready_seconds = time.perf_counter() - started
        yield server
    except BaseException:
        server.kill()  # whatever it holds is thrown away: no need to wait for it
        raise
    finally:
        server.stop()
