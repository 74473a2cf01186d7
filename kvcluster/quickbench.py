"""The quick benchmark behind `kvcluster bench`: kvcluster beside the stores a user has.

What is measured. Every peer gets the same N keys (`key:000000`, ...) with string values
(`value-00000000`, ...), stored untimed first. Then, one peer at a time (so that peers
never compete for cores), one client in this process runs four workloads, each for
`seconds` after an untimed warm-up of a tenth of that (at most half a second):

    set        one key per request, in key order, overwriting the stored value
    get        one key per request
    set_many   100 keys per request: kvcluster `set_many`, redis MSET
    get_many   100 keys per request: kvcluster `get_many`, redis MGET

Peers: kvcluster (a temporary one-shard cluster, durability "interval", over its Unix
socket); redis-server, when installed, with an append-only file fsynced every second (the
promise "interval" makes) over loopback TCP, through redis-py (with hiredis when that is
installed); `multiprocessing.Manager().dict()` (a server process, pickle over a socket,
nothing on disk); `diskcache.Cache`, when installed (SQLite inside this process: no
round trip at all). The Manager and diskcache have no batch request: their batch rows
are empty rather than a loop of single requests dressed up as a batch.

How to read it. `ops_per_s` counts keys (a batch of 100 is 100 ops); `batches_per_s`
counts batch requests; `p50_us` is the median time of one request (one whole batch on
the batch rows). A ratio is kvcluster's ops/s over a peer's: above 1, kvcluster is
faster. One client with one request at a time measures the cost of a round trip, not
what a cluster serves many clients on many cores (bench/ has those figures); on a busy
or shared machine these figures move by tens of percent between runs.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import importlib.metadata
import importlib.util
import multiprocessing
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any

import kvcluster
from kvcluster.errors import InvalidRequest

__all__ = [
    "BATCH",
    "PEERS",
    "WORKLOADS",
    "BenchReport",
    "CaseResult",
    "Params",
    "PeerReport",
    "ProgressFn",
    "environment",
    "free_port",
    "plan",
    "run",
]

BATCH = 100  # keys per batch request
WORKLOADS: dict[str, str] = {
    "set": "set, one key",
    "get": "get, one key",
    "set_many": f"set, batch of {BATCH}",
    "get_many": f"get, batch of {BATCH}",
}
PEERS: dict[str, str] = {
    "kvcluster": "kvcluster",
    "redis": "redis",
    "manager": "Manager dict",
    "diskcache": "diskcache",
}
PACKAGES = ("kvcluster", "redis", "hiredis", "diskcache", "matplotlib", "rich", "click", "msgpack", "pyzmq")
# redis's peer of durability "interval": the AOF is fsynced once a second, no RDB snapshots
REDIS_ARGS = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
REDIS_READY_TIMEOUT = 10.0
REDIS_STOP_TIMEOUT = 10.0
PRELOAD_CHUNK = 1000

ProgressFn = Callable[[int, int, str], None]  # (cases done, cases in all, what runs now)


@dataclass(frozen=True)
class Params:
    seconds: float = 2.0  # timed, per peer and workload
    keys: int = 10_000
    redis: bool = True  # False: leave redis-server out even when it is installed

    def __post_init__(self) -> None:
        if not (0 < self.seconds < float("inf")):
            raise InvalidRequest(f"seconds must be a finite number > 0, not {self.seconds!r}")
        if self.keys < BATCH:
            raise InvalidRequest(f"keys must be at least {BATCH} (one batch), not {self.keys!r}")

    @property
    def warmup(self) -> float:
        return min(self.seconds / 10, 0.5)


@dataclass(frozen=True)
class CaseResult:
    """One workload on one peer; figures are None where the peer has no such request."""

    ops_per_s: float | None
    batches_per_s: float | None = None
    p50_us: float | None = None
    requests: int = 0
    seconds: float = 0.0
    note: str | None = None


@dataclass
class PeerReport:
    name: str
    label: str
    available: bool
    reason: str | None = None  # why not available
    details: dict[str, Any] = field(default_factory=dict)  # versions, transport, durability
    results: dict[str, CaseResult] = field(default_factory=dict)


@dataclass
class BenchReport:
    params: Params
    environment: dict[str, Any]
    peers: dict[str, PeerReport]
    seconds: float = 0.0  # the whole run, start-ups included

    def ratios(self) -> dict[str, dict[str, Any]]:
        """Per workload: kvcluster's ops/s over each peer's, and over the best peer's."""
        mine = self.peers["kvcluster"].results
        out: dict[str, dict[str, Any]] = {}
        for workload in WORKLOADS:
            ours = mine[workload].ops_per_s if workload in mine else None
            theirs = {
                name: rate
                for name, peer in self.peers.items()
                if name != "kvcluster" and workload in peer.results
                if (rate := peer.results[workload].ops_per_s)
            }
            best = max(theirs, key=lambda name: theirs[name], default=None)
            out[workload] = {
                "best_peer": best,
                "kvcluster_over_best": None if ours is None or best is None else ours / theirs[best],
                "kvcluster_over": {name: None if ours is None else ours / rate for name, rate in theirs.items()},
            }
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "kvcluster bench",
            "environment": self.environment,
            "parameters": {**asdict(self.params), "warmup_seconds": self.params.warmup, "batch": BATCH},
            "workloads": WORKLOADS,
            "peers": {
                name: {"label": p.label, "available": p.available, "reason": p.reason, "details": p.details}
                for name, p in self.peers.items()
            },
            "results": {
                name: {workload: asdict(case) for workload, case in p.results.items()}
                for name, p in self.peers.items()
                if p.available
            },
            "ratios": self.ratios(),
            "total_seconds": self.seconds,
        }


# -- peers -------------------------------------------------------------------------


class _Unavailable(Exception):
    """A peer failed to start: reported as not available, not as an error of the run."""


@dataclass(frozen=True)
class _Driver:
    """One opened peer's requests, on the benchmark's string keys and values."""

    set: Callable[[str, str], object]
    get: Callable[[str], object]
    load: Callable[[dict[str, str]], object]  # untimed preload of one chunk
    set_many: Callable[[dict[str, str]], object] | None = None
    get_many: Callable[[list[str]], object] | None = None
    details: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _kvcluster(directory: str) -> Iterator[_Driver]:
    with kvcluster.start(directory, shards=1, durability="interval") as cluster:
        ns = cluster.connect().namespace("default")
        yield _Driver(
            ns.set,
            ns.get,
            ns.set_many,
            ns.set_many,
            ns.get_many,
            details={"version": kvcluster.__version__, "shards": 1, "durability": "interval", "via": "Unix socket"},
        )


@contextlib.contextmanager
def _redis(directory: str) -> Iterator[_Driver]:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.utils import HIREDIS_AVAILABLE

    executable = shutil.which("redis-server")
    if executable is None:  # it was there when the peers were planned
        raise _Unavailable("redis-server is no longer on PATH")
    port = free_port()
    log = os.path.join(directory, "redis.log")
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--daemonize", "no"]
    # errors before redis opens its log (a bad option, a taken port) go to stdout
    with open(log, "wb") as out:
        try:
            process = subprocess.Popen([*command, *REDIS_ARGS], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        except OSError as exc:
            raise _Unavailable(f"redis-server did not start: {exc}") from None
    # no retries: redis-py's default backoff would stretch the readiness polls and SHUTDOWN
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, retry=Retry(NoBackoff(), 0))
    try:
        _wait_for_redis(client, process, log)
        yield _Driver(
            client.set,
            client.get,
            client.mset,
            client.mset,
            client.mget,
            details={
                "version": _redis_server_version(executable),
                "redis_py": _version("redis"),
                "parser": "hiredis" if HIREDIS_AVAILABLE else "python",
                "durability": "appendonly yes, appendfsync everysec",
                "via": "TCP loopback",
            },
        )
    finally:
        _stop_redis(client, process)


def _wait_for_redis(client: Any, process: subprocess.Popen[bytes], log: str) -> None:
    """Poll with PING until it answers: nothing else tells when redis-server serves."""
    import redis

    deadline = time.monotonic() + REDIS_READY_TIMEOUT
    while True:
        if process.poll() is not None:
            raise _Unavailable(f"redis-server exited with status {process.returncode}: {_tail(log)}")
        with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
            if client.ping():
                return
        if time.monotonic() > deadline:
            raise _Unavailable(f"redis-server did not answer PING within {REDIS_READY_TIMEOUT:g} s")
        time.sleep(0.005)  # the pause between polls, not a wait standing in for one


def _stop_redis(client: Any, process: subprocess.Popen[bytes]) -> None:
    """SHUTDOWN (which fsyncs the AOF), then kill if it is still there after the timeout."""
    import redis

    try:
        if process.poll() is None:
            with contextlib.suppress(redis.RedisError):
                client.shutdown(nosave=True)
            try:
                process.wait(REDIS_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        client.close()


@contextlib.contextmanager
def _manager(directory: str) -> Iterator[_Driver]:
    # spawn: the server process starts clean, not a fork of a process with threads running
    with multiprocessing.get_context("spawn").Manager() as manager:
        shared = manager.dict()
        yield _Driver(shared.__setitem__, shared.get, shared.update, details={"via": "Unix socket, pickle"})


@contextlib.contextmanager
def _diskcache(directory: str) -> Iterator[_Driver]:
    diskcache: Any = importlib.import_module("diskcache")  # untyped: imported as Any
    cache = diskcache.Cache(directory)

    def load(chunk: dict[str, str]) -> None:
        with cache.transact():  # one SQLite transaction per chunk, not one per key
            for key, value in chunk.items():
                cache.set(key, value)

    try:
        yield _Driver(cache.set, cache.get, load, details={"version": _version("diskcache"), "via": "in process"})
    finally:
        cache.close()


_OPENERS: dict[str, Callable[[str], contextlib.AbstractContextManager[_Driver]]] = {
    "kvcluster": _kvcluster,
    "redis": _redis,
    "manager": _manager,
    "diskcache": _diskcache,
}
_HAS_BATCHES = {"kvcluster": True, "redis": True, "manager": False, "diskcache": False}


def _cases(peer: str) -> int:
    return len(WORKLOADS) if _HAS_BATCHES[peer] else len(WORKLOADS) - 2


def plan(params: Params) -> dict[str, PeerReport]:
    """Every peer, with the reason it cannot run here (None: it can)."""
    reasons: dict[str, str | None] = {
        "kvcluster": None,
        "redis": _redis_missing(params),
        "manager": None,
        "diskcache": None if _importable("diskcache") else "the diskcache package is not installed",
    }
    return {name: PeerReport(name, PEERS[name], reason is None, reason) for name, reason in reasons.items()}


def _redis_missing(params: Params) -> str | None:
    if not params.redis:
        return "left out (--no-redis)"
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH"
    if not _importable("redis"):
        return "the redis package is not installed (pip install redis hiredis)"
    return None


# -- measuring ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Data:
    keys: list[str]
    values: list[str]
    items: list[dict[str, str]]  # one batch of (key, value) each
    key_batches: list[list[str]]

    @classmethod
    def make(cls, n: int) -> _Data:
        keys = [f"key:{i:06d}" for i in range(n)]
        values = [f"value-{i:08d}" for i in range(n)]
        starts = range(0, n - BATCH + 1, BATCH)
        items = [dict(zip(keys[s : s + BATCH], values[s : s + BATCH], strict=True)) for s in starts]
        return cls(keys, values, items, [keys[s : s + BATCH] for s in starts])


def _requests(driver: _Driver, data: _Data) -> dict[str, tuple[Callable[[int], object], int]]:
    """Per workload: request i, and how many distinct i there are (requests wrap around)."""
    keys, values, items, batches = data.keys, data.values, data.items, data.key_batches
    put, fetch = driver.set, driver.get
    out: dict[str, tuple[Callable[[int], object], int]] = {
        "set": (lambda i: put(keys[i], values[i]), len(keys)),
        "get": (lambda i: fetch(keys[i]), len(keys)),
    }
    if (put_many := driver.set_many) is not None:
        out["set_many"] = (lambda i: put_many(items[i]), len(items))
    if (fetch_many := driver.get_many) is not None:
        out["get_many"] = (lambda i: fetch_many(batches[i]), len(batches))
    return out


def _time(request: Callable[[int], object], n: int, seconds: float) -> tuple[list[int], float]:
    """Send requests 0, 1, ... (wrapping at n) for `seconds`: each one's ns, and the time taken."""
    clock = time.perf_counter_ns
    latencies: list[int] = []
    start = now = clock()
    end = start + int(seconds * 1e9)
    i = 0
    while now < end:
        request(i % n)
        after = clock()
        latencies.append(after - now)
        now = after
        i += 1
    return latencies, (now - start) / 1e9


def _case(request: Callable[[int], object], n: int, per_request: int, params: Params) -> CaseResult:
    _time(request, n, params.warmup)
    latencies, elapsed = _time(request, n, params.seconds)
    rate = len(latencies) / elapsed
    return CaseResult(
        ops_per_s=rate * per_request,
        batches_per_s=rate if per_request > 1 else None,
        p50_us=median(latencies) / 1000,
        requests=len(latencies),
        seconds=elapsed,
    )


def _preload(driver: _Driver, data: _Data) -> None:
    for start in range(0, len(data.keys), PRELOAD_CHUNK):
        chunk = slice(start, start + PRELOAD_CHUNK)
        driver.load(dict(zip(data.keys[chunk], data.values[chunk], strict=True)))
    # a peer answering the wrong thing would look fast: check before timing it
    for i in (0, len(data.keys) - 1):
        got = driver.get(data.keys[i])
        if got != data.values[i]:
            raise RuntimeError(f"after the preload, get({data.keys[i]!r}) gave {got!r}, not {data.values[i]!r}")


def run(params: Params, progress: ProgressFn | None = None) -> BenchReport:
    """Measure every available peer in turn; each is started here and stopped before the next."""
    started = time.perf_counter()
    peers = plan(params)
    report = BenchReport(params, environment(params), peers)
    data = _Data.make(params.keys)
    total = sum(_cases(p.name) for p in peers.values() if p.available)
    done = 0

    def tell(text: str) -> None:
        if progress is not None:
            progress(done, total, text)

    with tempfile.TemporaryDirectory(prefix="kvcluster-bench-") as root:
        for peer in (p for p in peers.values() if p.available):
            tell(f"{peer.label}: starting")
            directory = os.path.join(root, peer.name)
            os.mkdir(directory)
            try:
                with _OPENERS[peer.name](directory) as driver:
                    peer.details = driver.details
                    tell(f"{peer.label}: storing {params.keys:,} keys")
                    _preload(driver, data)
                    for workload, (request, n) in _requests(driver, data).items():
                        tell(f"{peer.label}: {WORKLOADS[workload]}")
                        per_request = BATCH if workload.endswith("_many") else 1
                        peer.results[workload] = _case(request, n, per_request, params)
                        done += 1
            except _Unavailable as exc:  # raised while it starts, before any case ran
                peer.available, peer.reason = False, str(exc)
                total -= _cases(peer.name)
                continue
            peer.results = {w: peer.results.get(w, CaseResult(None, note="no batch request")) for w in WORKLOADS}
    tell("done")
    report.seconds = time.perf_counter() - started
    return report


# -- environment -------------------------------------------------------------------


def environment(params: Params) -> dict[str, Any]:
    """What the figures depend on besides the code: interpreter, machine, versions, load."""
    executable = shutil.which("redis-server") if params.redis else None
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average": list(os.getloadavg()),  # a busy machine explains noisy figures
        "packages": {name: _version(name) for name in PACKAGES},
        "redis_server": None if executable is None else _redis_server_version(executable),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _redis_server_version(executable: str) -> str | None:
    """`7.0.15` from `redis-server --version`."""
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else out.strip() or None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a race with other programs is reported as unavailable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.read().splitlines()[-lines:]) or "(no output)"
    except OSError as exc:
        return f"(no log: {exc})"
