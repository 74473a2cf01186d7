"""`kvcluster recover`: point-in-time recovery of a cluster into a new data directory."""

from __future__ import annotations

import os

import click

from kvcluster.cli import main
from kvcluster.cli.options import data_dir_option, kv_errors


@main.command()
@data_dir_option
@click.option("--at", "at", required=True, help="µs since the epoch, or ISO-8601 (no timezone: UTC).")
@click.option("--into", "into", required=True, type=click.Path(file_okay=False), help="The new data directory.")
@kv_errors
def recover(data_dir: str, at: str, into: str) -> None:
    """Build INTO holding every write of DATA_DIR with a timestamp <= AT, then
    `kvcluster start --data-dir INTO` serves it.

    AT is µs since the epoch (as `set` prints) or an ISO-8601 time such as
    2025-01-31T12:00:00Z or 2025-01-31T13:00:00+01:00; a time without a timezone is
    UTC. INTO must not exist, or be empty.
    """
    from kvcluster.pitr import iso_time, recover

    report = recover(data_dir, at, into)
    reach = "the whole history is kept" if report.earliest == 0 else f"history kept from {iso_time(report.earliest)}"
    click.echo(f"recovered {os.path.abspath(data_dir)} at {report.at} µs ({report.at_iso}) into {report.into}")
    for shard, keys in enumerate(report.keys):
        click.echo(f"  shard {shard:3d}: {keys:,} keys")
    if report.transactions:
        click.echo(f"  {report.transactions} transactions in doubt settled from the decision log")
    click.echo(f"  {sum(report.keys):,} keys in {report.seconds:.2f} s; {reach}")
    click.echo(f"  start it: kvcluster start --data-dir {report.into}")
