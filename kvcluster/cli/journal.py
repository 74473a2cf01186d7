"""`kvcluster verify`: check journals and archives on disk."""

from __future__ import annotations

import sys

import click

from kvcluster.cli import main
from kvcluster.cli.options import DEFAULT_DATA_DIR


@main.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False), help="Same as DIRECTORY.")
@click.option("--fix", is_flag=True, help="Cut torn tails (never other damage). The store must be stopped.")
def verify(directory: str | None, data_dir: str | None, fix: bool) -> None:
    """Check every journal and archive under DIRECTORY; name the offset of any damage.

    Exit status: 0 when everything is valid (or was fixed), 1 when damage remains.
    """
    from kvcluster.errors import StorageError
    from kvcluster.journal.verify import fix_torn_tail, verify_tree

    root = directory or data_dir or DEFAULT_DATA_DIR
    reports = verify_tree(root)
    if not reports:
        raise click.ClickException(f"no journal or archive found under {root}")
    damaged = 0
    for report in reports:
        kind = "archive" if report.archived else "journal"
        if report.damage is None:
            click.echo(f"ok       {report.path} ({kind}, {report.records} records, {report.valid_bytes} bytes)")
            continue
        if fix and report.damage.torn and not report.archived:
            try:
                fix_torn_tail(report)
            except StorageError as exc:
                click.echo(f"DAMAGED  {report.damage}\n         not fixed: {exc}")
                damaged += 1
                continue
            click.echo(f"fixed    {report.damage}")
            continue
        hint = " (kvcluster verify --fix cuts it)" if report.damage.torn and not report.archived else ""
        click.echo(f"DAMAGED  {report.damage}{hint}")
        damaged += 1
    if damaged:
        click.echo(f"{damaged} of {len(reports)} files damaged")
        sys.exit(1)
    click.echo(f"valid: {len(reports)} files")
