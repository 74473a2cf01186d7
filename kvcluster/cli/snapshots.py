"""`kvcluster snapshot`, `load` and `autosave`: snapshot files of a running cluster."""

from __future__ import annotations

import json

import click

from kvcluster.cli import main
from kvcluster.cli.options import address_option, data_dir_option, kv_errors, target

__all__ = ["autosave", "load", "snapshot"]


@main.command()
@data_dir_option
@address_option
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The snapshot file to write.")
@click.option("--namespace", default=None, help="Only this namespace (default: the whole cluster).")
@kv_errors
def snapshot(data_dir: str, address: str | None, out: str, namespace: str | None) -> None:
    """Write a consistent snapshot (one cut across every shard) while writes go on."""
    from kvcluster import connect

    with connect(target(data_dir, address)) as client:
        space = None if namespace is None else client.namespace(namespace)
        summary = client.save_snapshot(out) if space is None else space.save_snapshot(out)
    click.echo(json.dumps(summary))


@main.command()
@data_dir_option
@address_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@kv_errors
def load(data_dir: str, address: str | None, file: str) -> None:
    """Write a snapshot's keys into the running cluster (verified completely first)."""
    from kvcluster import connect

    with connect(target(data_dir, address)) as client:
        click.echo(json.dumps(client.load_snapshot(file)))


@main.command()
@data_dir_option
@address_option
@click.option("--interval", type=click.FloatRange(min=0), help="Seconds between snapshots (0: remove the task).")
@click.option("--pattern", default="autosave-{ns}-{ts}.kvs", show_default=True, help="{ts}: cut in µs; {ns}.")
@click.option("--keep", type=click.IntRange(min=0), default=0, show_default=True, help="Newest files kept (0: all).")
@click.option("--namespace", default=None, help="Only this namespace (default: the whole cluster).")
@kv_errors
def autosave(
    data_dir: str, address: str | None, interval: float | None, pattern: str, keep: int, namespace: str | None
) -> None:
    """Set (or with --interval 0 remove) an autosave task; with no --interval, list them."""
    from kvcluster import connect

    with connect(target(data_dir, address)) as client:
        if interval is None:
            click.echo(json.dumps(client.autosave_tasks(), indent=2))
        elif interval == 0:
            client.remove_autosave(namespace)
            click.echo("removed")
        else:
            client.set_autosave(interval, pattern, namespace=namespace, keep=keep)
            click.echo(json.dumps(client.autosave_tasks(), indent=2))
