"""The `kvcluster` command line. The CLI, not the library, configures logging."""

from __future__ import annotations

import logging
import sys

import click

from kvcluster import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kvcluster")
@click.option("-v", "--verbose", is_flag=True, help="Log informational messages too.")
def main(verbose: bool) -> None:
    """kvcluster: a versioned, crash-resilient key-value store for one host."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


from kvcluster.cli import bench, cluster, data, export, journal, recovery, snapshots  # noqa: E402  (the commands register on `main`)

__all__ += ["bench", "cluster", "data", "export", "journal", "recovery", "snapshots"]
