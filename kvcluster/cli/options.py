"""Options several commands share, and turning errors into clean exits."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from kvcluster.errors import KVError

__all__ = ["DEFAULT_DATA_DIR", "address_option", "data_dir_option", "kv_errors", "target"]

DEFAULT_DATA_DIR = "./kvcluster-data"
F = TypeVar("F", bound=Callable[..., Any])

data_dir_option = click.option(
    "--data-dir",
    "data_dir",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    envvar="KVCLUSTER_DATA_DIR",
    help="The cluster's data directory.",
)
address_option = click.option(
    "--address", default=None, help="Reach the cluster through its router instead (tcp://host:port)."
)


def target(data_dir: str, address: str | None) -> str:
    return address or os.path.abspath(data_dir)


def kv_errors(command: F) -> F:
    """Print a KVError as `Error: ...` and exit with status 1, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KVError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None

    return wrapper  # type: ignore[return-value]
