"""Watching the soak's processes: memory and open file descriptors sampled per role, and
the judgement whether each stayed flat after the warm-up.

Roles, not pids: a shard killed and restarted is a new process serving the same role
(`shard-1`), and so is a restarted coordinator. The cluster's processes are found from
the supervisor's process tree and the shards' pid files, so sampling needs no answer
from the coordinator (which the soak kills now and then).

Memory is judged on anonymous RSS (RSS less file-backed pages): a shard's journal is a
memory-mapped file whose touched pages count in its RSS and grow until the next
rotation, bounded by the journal's size, which is not a leak. Total RSS is reported too.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

import psutil

__all__ = ["Flatness", "Sample", "Sampler", "cluster_roles", "judge_flat"]

RSS_TOLERANCE = 0.20  # the last quarter's median may be this much above the first's
FD_TOLERANCE = 10  # open file descriptors the last quarter's median may add
MIN_SAMPLES = 8  # after the warm-up, fewer than this is too few to judge


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the soak started
    pid: int
    rss: int
    anon: int  # RSS less file-backed and shared pages
    fds: int


@dataclass(frozen=True)
class Flatness:
    """One role's verdict. `flat` is None when there were too few samples to judge."""

    role: str
    samples: int
    rss_first: int
    rss_last: int
    anon_first: int
    anon_last: int
    fds_first: int
    fds_last: int
    flat: bool | None
    why: str = ""


def judge_flat(
    role: str,
    samples: list[Sample],
    warmup_end: float,
    rss_tolerance: float = RSS_TOLERANCE,
    fd_tolerance: int = FD_TOLERANCE,
) -> Flatness:
    """Compare the median of the last quarter of the samples after `warmup_end` with the
    median of the first quarter: flat when anonymous RSS grew by at most `rss_tolerance`
    and open fds by at most `fd_tolerance`. Medians, so one sample taken mid-restart or
    mid-snapshot does not decide."""
    after = [s for s in samples if s.t >= warmup_end]
    if not after:
        return Flatness(role, 0, 0, 0, 0, 0, 0, 0, None, "no samples after the warm-up")
    quarter = max(1, len(after) // 4)
    first, last = after[:quarter], after[-quarter:]

    def median(part: list[Sample], attribute: str) -> int:
        return int(statistics.median(getattr(s, attribute) for s in part))

    anon_first, anon_last = median(first, "anon"), median(last, "anon")
    fds_first, fds_last = median(first, "fds"), median(last, "fds")
    figures = (median(first, "rss"), median(last, "rss"), anon_first, anon_last, fds_first, fds_last)
    if len(after) < MIN_SAMPLES:
        return Flatness(role, len(after), *figures, None, f"{len(after)} samples after the warm-up: too few")
    problems = []
    if anon_last > anon_first * (1 + rss_tolerance):
        problems.append(f"anonymous RSS {_mib(anon_first)} -> {_mib(anon_last)} (+{rss_tolerance:.0%} allowed)")
    if fds_last > fds_first + fd_tolerance:
        problems.append(f"open fds {fds_first} -> {fds_last} (+{fd_tolerance} allowed)")
    return Flatness(role, len(after), *figures, not problems, "; ".join(problems))


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def cluster_roles(supervisor: int, run_dir: str) -> tuple[dict[str, int], int]:
    """The cluster's processes now, by role, and how many others run under the
    supervisor (a router, a snapshot's forked writers, anything unexpected)."""
    try:
        root = psutil.Process(supervisor)
        tree = {p.pid: p for p in root.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}
    except psutil.Error:
        return {}, 0
    roles = {"supervisor": supervisor}
    shards: set[int] = set()
    for name in os.listdir(run_dir):
        if name.startswith("shard-") and name.endswith(".pid"):
            try:
                with open(os.path.join(run_dir, name), encoding="ascii") as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                continue
            if pid in tree:  # a pid file outlives its process until the restart rewrites it
                roles[f"shard-{int(name[6:-4])}"] = pid
                shards.add(pid)
    coordinators = []
    for pid, process in tree.items():
        try:
            if process.ppid() != supervisor or pid in shards:
                continue
            if any("resource_tracker" in part for part in process.cmdline()):
                roles["resource-tracker"] = pid
            else:
                coordinators.append((process.create_time(), pid))
        except psutil.Error:
            continue
    if coordinators:
        roles["coordinator"] = max(coordinators)[1]
    return roles, len(tree) + 1 - len(roles)


@dataclass
class Sampler:
    """Samples of every role, kept for the whole run (a few per minute per process)."""

    series: dict[str, list[Sample]] = field(default_factory=dict)
    extra_processes: list[tuple[float, int]] = field(default_factory=list)
    _handles: dict[int, psutil.Process] = field(default_factory=dict)

    def sample(self, t: float, roles: dict[str, int], extra: int = 0) -> None:
        self.extra_processes.append((t, extra))
        for role, pid in roles.items():
            try:
                process = self._handles.get(pid) or self._handles.setdefault(pid, psutil.Process(pid))
                with process.oneshot():
                    memory = process.memory_info()
                    fds = process.num_fds()
            except psutil.Error:
                self._handles.pop(pid, None)
                continue  # gone (killed, restarting): this role has no sample this time
            self.series.setdefault(role, []).append(Sample(t, pid, memory.rss, memory.rss - memory.shared, fds))
        live = set(roles.values())
        for pid in [pid for pid in self._handles if pid not in live]:
            del self._handles[pid]

    def judge(self, warmup_end: float, skip: frozenset[str] = frozenset()) -> list[Flatness]:
        return [
            judge_flat(role, samples, warmup_end) for role, samples in sorted(self.series.items()) if role not in skip
        ]
