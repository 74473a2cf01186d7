"""`kvcluster bench`: a quick benchmark beside the stores available here, with a table
and a plot. What it measures and how to read it: `kvcluster.quickbench`."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kvcluster.cli import main
from kvcluster.cli.options import kv_errors
from kvcluster.quickbench import BATCH, WORKLOADS, BenchReport, CaseResult, Params, ProgressFn, run

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["bench"]

DEFAULT_OUT = "./kvcluster-bench"


def _seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0 < value < math.inf:  # written so that nan fails too
        raise click.BadParameter(f"{value!r} is not a finite number of seconds > 0")
    return value


@main.command()
@click.option(
    "--seconds", type=float, default=2.0, show_default=True, callback=_seconds, help="Timed seconds per case."
)
@click.option(
    "--keys", type=click.IntRange(min=BATCH), default=10_000, show_default=True, help="Keys stored before timing."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=DEFAULT_OUT,
    show_default=True,
    help="Directory for bench.json and bench.png.",
)
@click.option("--no-redis", is_flag=True, help="Leave redis-server out even when it is installed.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON to stdout instead of the table.")
@kv_errors
def bench(seconds: float, keys: int, out: str, no_redis: bool, as_json: bool) -> None:
    """Compare kvcluster with redis-server, a Manager dict and diskcache, where installed.

    One client runs set and get of one key, and batches of 100 where a store has them,
    for SECONDS each; ops/s count keys. Peers run one after another, each started and
    stopped here. With the defaults it takes about half a minute.
    """
    from rich.console import Console

    params = Params(seconds=seconds, keys=keys, redis=not no_redis)
    directory = Path(out)
    try:  # before measuring: a bad --out fails now, not after the run
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create {out}: {exc}") from None
    errors = Console(stderr=True)
    with _sigterm_as_interrupt(), _progress(errors) as progress:
        report = run(params, progress)
    data = report.to_json()
    json_path = _write_json(directory / "bench.json", data)
    png_path = _plot(report, directory / "bench.png")
    # off a terminal (a pipe, a log) rich would fold the table at 80 columns
    console = errors if as_json else Console() if sys.stdout.isatty() else Console(width=120)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _print_table(report, console)
    console.print(f"results: {json_path}")
    console.print(f"plot:    {png_path}" if png_path else "matplotlib not installed: no plot")
    console.print(f"total:   {report.seconds:.1f} s")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the run as ^C does, through the finally blocks that stop every peer;
    by default it ends the process at once, leaving redis-server and the Manager running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _progress(console: Console) -> Iterator[ProgressFn]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def update(done: int, total: int, text: str) -> None:
            bar.update(task, completed=done, total=total, description=text)

        yield update


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


# -- the table ---------------------------------------------------------------------


def _print_table(report: BenchReport, console: Console) -> None:
    from rich.table import Table

    peers = [p for p in report.peers.values() if p.available]
    p = report.params
    table = Table(
        title=f"kvcluster bench: ops/s (keys/s), one client, {p.seconds:g} s per case, {p.keys:,} keys",
        title_justify="left",
        caption="p50: median time of one request (of one whole batch on the batch rows)",
        caption_justify="left",
    )
    table.add_column("workload")
    for peer in peers:
        table.add_column(peer.label, justify="right")
    table.add_column("kvcluster ÷ best peer", justify="right")
    ratios = report.ratios()
    for workload, label in WORKLOADS.items():
        cells = [_cell(peer.results[workload]) for peer in peers]
        table.add_row(label, *cells, _ratio(ratios[workload]))
    console.print(table)
    for peer in report.peers.values():
        if not peer.available:
            console.print(f"{peer.label}: not available: {peer.reason}")


def _cell(case: CaseResult) -> str:
    if case.ops_per_s is None or case.p50_us is None:
        return "—"
    rate = f"{case.ops_per_s:,.0f}"
    if case.batches_per_s is not None:
        return f"{rate}\n{case.batches_per_s:,.0f} batches/s\np50 {_micros(case.p50_us)}"
    return f"{rate}\np50 {_micros(case.p50_us)}"


def _micros(us: float) -> str:
    return f"{us:,.0f} µs" if us >= 10 else f"{us:.1f} µs"


def _ratio(ratio: dict[str, Any]) -> str:
    value = ratio["kvcluster_over_best"]
    if value is None:
        return "—"
    style = "green" if value >= 1 else "red"
    return f"[{style}]{value:.2f}x[/{style}]\nvs {ratio['best_peer']}"


# -- the plot ----------------------------------------------------------------------


def _plot(report: BenchReport, path: Path) -> Path | None:
    """A bar chart of ops/s per workload and peer; None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    peers = [p for p in report.peers.values() if p.available]
    figure = Figure(figsize=(9, 4.8), layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself: no pyplot, no GUI backend
    axes = figure.add_subplot()
    width = 0.8 / len(peers)
    for n, peer in enumerate(peers):
        xs, ys = [], []
        for x, workload in enumerate(WORKLOADS):
            rate = peer.results[workload].ops_per_s
            if rate is not None:
                xs.append(x - 0.4 + width * (n + 0.5))
                ys.append(rate)
        bars = axes.bar(xs, ys, width, label=peer.label)
        axes.bar_label(bars, labels=[_short(y) for y in ys], fontsize=7, padding=2)
    axes.set_yscale("log")  # the peers differ by orders of magnitude on the batch rows
    axes.set_xticks(range(len(WORKLOADS)), list(WORKLOADS.values()))
    axes.set_ylabel("ops/s (keys/s), log scale")
    axes.set_title(f"kvcluster bench: one client, {report.params.seconds:g} s per case (higher is better)")
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)
    return path


def _short(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.1f}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.0f}k" if rate >= 1e4 else f"{rate / 1e3:.1f}k"
    return f"{rate:.0f}"
