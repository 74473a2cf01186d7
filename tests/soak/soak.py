"""The soak (reliability bar item 19): a real cluster under a mixed load from several client
processes for a given number of minutes, with a random fault every --fault-every
seconds; at the end a summary, and exit status 0 only if everything stayed green.

    scripts/soak --minutes 60                     # the bar's figure
    scripts/soak --minutes 2 --json soak.json     # a quick look, with a JSON summary

Green means: no read any client checked was wrong (soak_client.KeyModel), every
window's history of the shared keys is linearizable (kvtest.linearizability), the
cluster served again after every fault, every process's memory and open fds stayed
flat after the warm-up (soak_watch), no client stalled past the watchdog's bound or
raised anything but a KVError, and every client finished and exited in time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kvtest.linearizability import Operation, check
from kvtest.waiting import wait_until
from rich.console import Console
from rich.table import Table
from soak_client import FINAL_CHECK_SECONDS, ClientConfig, Shared, client_main
from soak_faults import FAULT_KINDS, RECOVERY_BOUND, Admin, Faults
from soak_watch import Sampler, cluster_roles

import kvcluster
from kvcluster.client.batches import TXN_WINDOW

__all__ = ["main", "parse_args"]

READY_BOUND = 60.0  # seconds the clients have to start and connect
EXIT_BOUND = 15.0  # seconds a client has to exit once it has reported
MAX_REPORTED = 20


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long the load runs (default 60)")
    parser.add_argument("--fault-every", type=float, default=30.0, help="seconds between faults (default 30)")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--durability", default="interval", choices=("none", "interval", "always"))
    parser.add_argument("--timeout", type=float, default=2.0, help="the clients' timeout, seconds (default 2)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock; printed)")
    parser.add_argument("--data", default=None, help="data directory (default: a temporary one, removed after)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the summary as JSON here")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS/fd samples")
    parser.add_argument("--history-window", type=float, default=10.0, help="seconds of shared-key history per check")
    parser.add_argument("--checkpoint-every", type=float, default=10.0, help="seconds between own-key sweeps")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = int(time.time()) % 100_000
    return args


@dataclass
class Histories:
    """Shared-key operations by window, checked once every client has moved past it."""

    clients: int
    pending: dict[int, list[Operation]] = field(default_factory=lambda: defaultdict(list))
    done_through: dict[int, int] = field(default_factory=dict)
    windows: int = 0
    keys: int = 0
    operations: int = 0
    violations: int = 0
    reports: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, client: int, window: int, operations: list[Operation], last: bool = True) -> None:
        """More of `client`'s operations in `window`; `last`: it has moved past the window."""
        if window >= 0:
            self.pending[window].extend(operations)
        if last:
            self.done_through[client] = max(window, self.done_through.get(client, -1))

    def check_ready(self, everything: bool = False) -> None:
        """Check every window all clients are done with (all of them at the end)."""
        ready = min(self.done_through.values()) if len(self.done_through) == self.clients else -1
        for window in sorted(w for w in self.pending if everything or w <= ready):
            operations = self.pending.pop(window)
            started = time.monotonic()
            found = check(operations)
            self.seconds += time.monotonic() - started
            self.windows += 1
            self.keys += len({op.key for op in operations})
            self.operations += len(operations)
            self.violations += len(found)
            self.reports.extend(str(v) for v in found[: max(0, MAX_REPORTED - len(self.reports))])


class Soak:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.failures: list[str] = []
        self.sampler = Sampler()
        self.histories = Histories(args.clients)
        self.reports: dict[int, dict[str, Any]] = {}
        self.hangs: list[str] = []
        self.stalled: set[int] = set()  # clients flagged by the watchdog and not moving since
        self.run_tag = format(time.time_ns() // 1000, "x")
        # A client may legitimately wait: a request for its timeout, a few of them in a
        # batch, a shard paused for twice the timeout, and a cross-shard batch asking a
        # restarting coordinator for its decision for up to TXN_WINDOW. Past all that
        # without finishing one operation, it is hung.
        self.stall_bound = 3 * args.timeout + 2 * args.timeout + TXN_WINDOW

    def log(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def run(self) -> dict[str, Any]:
        args = self.args
        self.log(
            f"soak: {args.minutes:g} min, {args.shards} shards, {args.clients} clients, durability {args.durability}, "
            f"a fault every {args.fault_every:g} s, client timeout {args.timeout:g} s, seed {args.seed}"
        )
        with kvcluster.start(args.data, shards=args.shards, durability=args.durability) as cluster:
            self.cluster = cluster
            self.run_dir = os.path.join(cluster.data_dir, "run")
            self.log(f"cluster at {cluster.data_dir} (supervisor pid {cluster.process.pid})")
            context = multiprocessing.get_context("spawn")
            self.shared = Shared(
                queue=context.Queue(),
                stop=context.Event(),
                window=context.Value("i", 0, lock=False),
                heartbeat=context.Array("d", args.clients, lock=False),
                done=context.Array("q", args.clients, lock=False),
            )
            self.processes = [
                context.Process(
                    target=client_main,
                    args=(self._client_config(cluster.data_dir, n), self.shared),
                    name=f"soak-client-{n}",
                    daemon=True,
                )
                for n in range(args.clients)
            ]
            for process in self.processes:
                process.start()
            self._await_ready()
            self.started = time.monotonic()
            self.faults = Faults(cluster.data_dir, args.fault_every, args.timeout, args.seed, self.started, self.log)
            self.faults.start()
            try:
                self._load_phase()
            except KeyboardInterrupt:
                self.failures.append("interrupted (^C)")
            self.soaked = time.monotonic() - self.started
            self._stop_phase()
        return self._summary()

    def _client_config(self, data_dir: str, n: int) -> ClientConfig:
        args = self.args
        return ClientConfig(data_dir, n, args.timeout, args.seed, self.run_tag, checkpoint_every=args.checkpoint_every)

    def _await_ready(self) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + READY_BOUND
        while len(ready) < len(self.processes):
            try:
                message = self.shared.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"only {len(ready)} of {len(self.processes)} clients connected") from None
            if message[0] == "ready":
                ready.add(message[1])

    def _load_phase(self) -> None:
        args = self.args
        end = self.started + args.minutes * 60
        next_sample = self.started
        next_window = self.started + args.history_window
        next_progress = self.started + max(30.0, args.minutes * 6)  # about ten lines in a long run
        while (now := time.monotonic()) < end:
            # Waiting for the clients' messages is what paces this loop: it wakes for each
            # one, and at the latest for the next sample or window.
            self._receive(min(next_sample, next_window, end) - now)
            now = time.monotonic()
            if now >= next_sample:
                self._sample()
                self._watchdog(now)
                next_sample += args.sample_every
            if now >= next_window:
                self.shared.window.value += 1
                next_window += args.history_window
            self.histories.check_ready()
            if now >= next_progress:
                self._progress(now)
                next_progress += max(30.0, args.minutes * 6)

    def _receive(self, wait: float) -> None:
        try:
            message = self.shared.queue.get(timeout=max(0.0, wait))
        except queue.Empty:
            return
        while True:
            if message[0] in ("ops", "history"):
                self.histories.add(message[1], message[2], message[3], last=message[0] == "history")
            elif message[0] == "result":
                self.reports[message[1]] = message[2]
            try:
                message = self.shared.queue.get_nowait()
            except queue.Empty:
                return

    def _sample(self) -> None:
        roles, extra = cluster_roles(self.cluster.process.pid, self.run_dir)
        roles.update({f"client-{n}": p.pid for n, p in enumerate(self.processes) if p.pid and p.exitcode is None})
        roles["runner"] = os.getpid()
        self.sampler.sample(time.monotonic() - self.started, roles, extra)

    def _watchdog(self, now: float) -> None:
        """A client that finished no operation for longer than the stall bound is hung; a
        client process that died before reporting is a failure."""
        for n, process in enumerate(self.processes):
            if n in self.reports:
                continue
            if process.exitcode is not None:
                self.failures.append(f"client {n} exited with {process.exitcode} before it reported")
                self.reports[n] = {}
                continue
            stalled = now - self.shared.heartbeat[n]
            if stalled > self.stall_bound and n not in self.stalled:
                self.stalled.add(n)
                self.hangs.append(
                    f"client {n}: no operation finished for {stalled:.1f} s at {now - self.started:.0f} s"
                )
                self.log(f"[{now - self.started:8.1f} s] WATCHDOG {self.hangs[-1]}")
            elif stalled <= self.stall_bound:
                self.stalled.discard(n)

    def _progress(self, now: float) -> None:
        ops = sum(self.shared.done[n] for n in range(len(self.processes)))
        h = self.histories
        self.log(
            f"[{now - self.started:8.1f} s] {ops:,} operations, {len(self.faults.records)} faults, "
            f"{h.windows} history windows checked ({h.violations} violations)"
        )

    def _stop_phase(self) -> None:
        """Stop the faults, wait for the cluster to serve, then let the clients run their
        final check and report; each must exit within the bound."""
        self.faults.stop.set()
        self.faults.join(RECOVERY_BOUND + 2 * self.args.timeout + 10)
        if self.faults.is_alive():
            self.failures.append("the fault thread did not finish")
        self.failures.extend(self.faults.failures)
        admin = Admin(self.cluster.data_dir, 10.0)
        try:
            wait_until(admin.serving, "the cluster serving at the end", RECOVERY_BOUND)
        except AssertionError as exc:
            self.failures.append(str(exc))
        self.shared.stop.set()
        deadline = time.monotonic() + self.stall_bound + FINAL_CHECK_SECONDS + EXIT_BOUND
        while len(self.reports) < len(self.processes) and time.monotonic() < deadline:
            self._receive(1.0)
            self._watchdog(time.monotonic())
        self._sample()
        admin.close()
        for n, process in enumerate(self.processes):
            if n not in self.reports:
                self.failures.append(f"client {n} did not report within the bound")
            process.join(max(0.0, deadline - time.monotonic()) + EXIT_BOUND)
            if process.exitcode is None:
                self.failures.append(f"client {n} did not exit; killed")
                process.kill()
                process.join(5)
        self.histories.check_ready(everything=True)

    def _summary(self) -> dict[str, Any]:
        args = self.args
        ops: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        errors_by_op: Counter[str] = Counter()
        latency: dict[str, float] = {}
        clients = [r for r in self.reports.values() if r]
        for report in clients:
            ops.update(report["ops"])
            errors.update(report["errors"])
            errors_by_op.update(report["errors_by_op"])
            for kind, seconds in report["latency_max_s"].items():
                latency[kind] = max(latency.get(kind, 0.0), seconds)
        violations = [text for r in clients for text in r["violations"]]
        violation_count = sum(r["violation_count"] for r in clients)
        unexpected = [text for r in clients for text in r["unexpected"]]
        unverified = [key for r in clients for key in r["unverified"]]
        warmup = min(self.soaked * 0.2, 60.0)
        flatness = self.sampler.judge(warmup, skip=frozenset({"runner"}))
        runner = self.sampler.series.get("runner", [])
        failures = list(self.failures)
        if violation_count:
            failures.append(f"{violation_count} own-key reads were wrong")
        if self.histories.violations:
            failures.append(f"{self.histories.violations} shared-key histories are not linearizable")
        if unexpected:
            failures.append(f"{sum(r['unexpected_count'] for r in clients)} unexpected exceptions in clients")
        if unverified:
            failures.append(f"{len(unverified)} own keys could not be read at the end")
        if self.hangs:
            failures.append(f"{len(self.hangs)} client stalls past {self.stall_bound:g} s")
        failures += [f"{f.role} not flat: {f.why}" for f in flatness if f.flat is False]
        return {
            "green": not failures,
            "failures": failures,
            "minutes": round(self.soaked / 60, 2),
            "config": {k: v for k, v in vars(args).items() if k != "json"},
            "ops": dict(sorted(ops.items())),
            "ops_total": sum(ops.values()),
            "errors": dict(sorted(errors.items())),
            "errors_by_op": dict(sorted(errors_by_op.items())),
            "faults": {kind: sum(r.kind == kind for r in self.faults.records) for kind in FAULT_KINDS},
            "fault_log": [asdict(record) for record in self.faults.records],
            "checker": {
                "own_reads_checked": sum(r["reads_checked"] for r in clients),
                "own_violations": violation_count,
                "own_violation_examples": violations[:MAX_REPORTED],
                "checkpoints": sum(r["checkpoints"] for r in clients),
                "unverified_keys": unverified[:MAX_REPORTED],
                "windows_checked": self.histories.windows,
                "histories_checked": self.histories.keys,
                "history_operations": self.histories.operations,
                "linearizability_violations": self.histories.violations,
                "linearizability_examples": self.histories.reports,
                "checker_seconds": round(self.histories.seconds, 2),
            },
            "processes": {f.role: asdict(f) for f in flatness},
            "runner_rss": [runner[0].rss, runner[-1].rss] if runner else None,
            "extra_processes_max": max((n for _, n in self.sampler.extra_processes), default=0),
            "warmup_s": round(warmup, 1),
            "latency_max_s": {kind: round(s, 3) for kind, s in sorted(latency.items())},
            "overruns": sum(r["overruns"] for r in clients),
            "hangs": self.hangs,
            "stall_bound_s": self.stall_bound,
            "unexpected": unexpected[:MAX_REPORTED],
        }


def print_summary(summary: dict[str, Any], console: Console) -> None:
    checker = summary["checker"]
    table = Table(title=f"soak: {summary['minutes']:.2f} minutes", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("operations", f"{summary['ops_total']:,}  " + _counts(summary["ops"]))
    table.add_row("errors", _counts(summary["errors"]) or "none")
    table.add_row("faults", _counts(summary["faults"]) or "none")
    table.add_row(
        "own keys",
        f"{checker['own_reads_checked']:,} reads checked, {checker['checkpoints']} sweeps, "
        f"{checker['own_violations']} wrong, {len(checker['unverified_keys'])} unreadable at the end",
    )
    table.add_row(
        "linearizability",
        f"{checker['histories_checked']} key histories in {checker['windows_checked']} windows, "
        f"{checker['history_operations']:,} operations, {checker['linearizability_violations']} violations "
        f"({checker['checker_seconds']} s checking)",
    )
    latency = summary["latency_max_s"]
    worst = max(latency.items(), key=lambda item: item[1], default=("-", 0.0))
    table.add_row(
        "max latency",
        f"{worst[1]:.3f} s ({worst[0]}); single-key ops over timeout + 10%: {summary['overruns']}",
    )
    table.add_row("stalls", f"{len(summary['hangs'])} (bound {summary['stall_bound_s']:g} s)")
    console.print(table)

    processes = Table(title=f"memory and fds after the {summary['warmup_s']:g} s warm-up (first vs last quarter)")
    for column in ("role", "samples", "RSS MiB", "anon RSS MiB", "fds", "flat"):
        processes.add_column(column, justify="left" if column == "role" else "right")
    for role, f in summary["processes"].items():
        verdict = {True: "yes", False: "NO", None: "n/a"}[f["flat"]]
        processes.add_row(
            role,
            str(f["samples"]),
            f"{f['rss_first'] / 2**20:.1f} -> {f['rss_last'] / 2**20:.1f}",
            f"{f['anon_first'] / 2**20:.1f} -> {f['anon_last'] / 2**20:.1f}",
            f"{f['fds_first']} -> {f['fds_last']}",
            verdict,
        )
    console.print(processes)
    for text in (
        checker["own_violation_examples"][:5] + checker["linearizability_examples"][:2] + summary["unexpected"][:3]
    ):
        console.print(text, markup=False, highlight=False)
    if summary["green"]:
        console.print("[bold green]GREEN[/]")
    else:
        console.print("[bold red]RED[/]")
        for failure in summary["failures"]:
            console.print(f"  - {failure}", markup=False, highlight=False)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count:,}" for kind, count in counts.items())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    summary = Soak(args, console).run()
    print_summary(summary, console)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    return 0 if summary["green"] else 1


if __name__ == "__main__":
    sys.exit(main())
