"""`kvcluster export --to redis+cluster://...`: copy a kvcluster (or a snapshot) into a
Redis Cluster, values and timestamps intact. The work is kvcluster.rediscluster.migrate's;
this module parses, shows a progress bar and prints the summary."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from kvcluster.cli import main
from kvcluster.cli.options import DEFAULT_DATA_DIR, address_option, kv_errors
from kvcluster.errors import InvalidRequest

if TYPE_CHECKING:
    from rich.console import Console

    from kvcluster.rediscluster.migrate import ExportReport, Progress

__all__ = ["export"]


def _redis_address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from kvcluster.rediscluster.address import parse_address

    try:
        return str(parse_address(value))
    except InvalidRequest as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.option(
    "--to",
    "to",
    required=True,
    metavar="redis+cluster://HOST:PORT[,...]",
    callback=_redis_address,
    help="The Redis Cluster to copy into (any live seed nodes).",
)
@click.option(
    "--data-dir",
    "data_dir",
    default=None,
    type=click.Path(file_okay=False),
    envvar="KVCLUSTER_DATA_DIR",
    help=f"Copy the running cluster of this data directory [default: {DEFAULT_DATA_DIR}].",
)
@address_option
@click.option(
    "--snapshot",
    "snapshot",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Copy this snapshot file instead of a running cluster.",
)
@click.option("--namespace", "namespaces", multiple=True, help="Only this namespace (repeat for more; default: all).")
@click.option("--force", is_flag=True, help="Copy into target namespaces whose limits differ (their limits stay).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of the table.")
@click.pass_context
@kv_errors
def export(
    ctx: click.Context,
    to: str,
    data_dir: str | None,
    address: str | None,
    snapshot: str | None,
    namespaces: tuple[str, ...],
    force: bool,
    as_json: bool,
) -> None:
    """Copy a kvcluster (or a snapshot) into a Redis Cluster, values and timestamps intact.

    Namespaces are created there with their limits (one that exists with other limits
    stops the export, unless --force); permanent keys are copied with their timestamps
    and msgpack bytes; ephemeral keys (memory-only) are counted, not copied. Where the
    target already holds a key, the newer record wins, so running it again is safe.
    """
    from rich.console import Console

    from kvcluster.rediscluster.migrate import export as run_export

    given = [
        option
        for option, value in (("--data-dir", data_dir), ("--address", address), ("--snapshot", snapshot))
        if value is not None and ctx.get_parameter_source(option[2:].replace("-", "_")) is ParameterSource.COMMANDLINE
    ]
    if len(given) > 1:
        raise click.UsageError(f"give one source, not {' and '.join(given)}")
    source = snapshot or address or os.path.abspath(data_dir or DEFAULT_DATA_DIR)
    if snapshot is None and address is None and not os.path.isdir(source):
        raise click.UsageError(f"no kvcluster data directory at {source} (give --data-dir or --snapshot)")
    console = Console(stderr=True)
    with _progress(console) as progress:
        report = run_export(source, to, namespaces=namespaces or None, progress=progress, force=force)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_summary(report)
    if report.failed:
        raise click.ClickException(
            f"{report.failed} keys were not copied: their Redis keys hold something that is not a kvcluster record"
        )


@contextlib.contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    """A bar per namespace (keys done of keys expected), on stderr while it runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        tasks: dict[str, Any] = {}

        def update(namespace: str, done: int, total: int | None) -> None:
            if namespace not in tasks:
                tasks[namespace] = bar.add_task(namespace, total=total)
            bar.update(tasks[namespace], completed=done, total=total)

        yield update


def _print_summary(report: ExportReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("namespace", "target", "keys", "written", "kept", "ephemeral skipped", "bytes")
    for ns in report.namespaces:
        table.add_row(
            ns.name,
            ns.target,
            f"{ns.keys:,}",
            f"{ns.written:,}",
            f"{ns.kept:,}",
            f"{ns.skipped_ephemeral:,}",
            f"{ns.bytes:,}",
        )
    console.print(table)
    for ns in report.namespaces:
        for line in [*ns.notes, *ns.errors]:
            console.print(f"{ns.name}: {line}", highlight=False)
    console.print(
        f"exported {len(report.namespaces)} namespaces, {report.keys:,} keys ({report.written:,} written, "
        f"{report.kept:,} kept, {report.bytes:,} value bytes) from {report.source} to {report.target} "
        f"in {report.seconds:.2f} s; {report.skipped_ephemeral:,} ephemeral keys skipped (memory-only)",
        highlight=False,
        soft_wrap=True,
    )
