"""Options several commands share, and turning errors into clean exits."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from kvcluster.errors import KVError

__all__ = ["DEFAULT_DATA_DIR", "address_option", "data_dir_option", "kv_errors", "retention_options", "target"]

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


UNLIMITED = "none"


def _limit(kind: type[int] | type[float]) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """Parse a retention limit: a number >= 0, or `none` (also `unlimited`) for no limit."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        text = value.strip().lower()
        if text in (UNLIMITED, "unlimited"):
            return UNLIMITED
        try:
            number = kind(text)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a number >= 0 nor 'none'") from None
        if not 0 <= number < math.inf:
            raise click.BadParameter(f"{value!r} is not a finite number >= 0 (0 keeps no archive; none: no limit)")
        return number

    return parse


def retention_options(command: F) -> F:
    """--retention-archives/-age/-bytes, handed to `command` as `retention`: the limits
    given ({"max_archives": 1, "max_age": None, ...}, None meaning no limit), or None."""

    @click.option(
        "--retention-archives",
        metavar="N|none",
        callback=_limit(int),
        help="Archives each shard keeps; none: no limit [64].",
    )
    @click.option(
        "--retention-age",
        metavar="SECONDS|none",
        callback=_limit(float),
        help="Seconds an archive is kept; none: no limit [7 days].",
    )
    @click.option(
        "--retention-bytes",
        metavar="BYTES|none",
        callback=_limit(int),
        help="Archive bytes each shard keeps; none: no limit [1 GiB].",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, retention_archives: Any, retention_age: Any, retention_bytes: Any, **kwargs: Any) -> Any:
        given = {"max_archives": retention_archives, "max_age": retention_age, "max_bytes": retention_bytes}
        limits = {name: None if limit == UNLIMITED else limit for name, limit in given.items() if limit is not None}
        return command(*args, retention=limits or None, **kwargs)

    return wrapper  # type: ignore[return-value]


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
