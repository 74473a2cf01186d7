"""`kvcluster get|set|del NAMESPACE KEY [VALUE]`: single keys from the shell."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from kvcluster.cli import main
from kvcluster.cli.options import address_option, data_dir_option, kv_errors, target


def _parse(value: str, as_string: bool) -> Any:
    """VALUE is JSON when it parses as JSON (so `42`, `true`, `{"a": 1}` keep their types),
    else the plain string; --string always takes it as a string."""
    if as_string:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return repr(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _namespace(data_dir: str, address: str | None, name: str) -> Any:
    from kvcluster import connect

    return connect(target(data_dir, address)).namespace(name)


@main.command("get")
@click.argument("namespace")
@click.argument("key")
@click.option("--versioned", is_flag=True, help="Print the timestamp of the value too.")
@data_dir_option
@address_option
@kv_errors
def get_command(namespace: str, key: str, versioned: bool, data_dir: str, address: str | None) -> None:
    """Print the value of KEY as JSON; exit status 1 if it does not exist."""
    found = _namespace(data_dir, address, namespace).get_versioned(key)
    if found is None:
        click.echo(f"{key}: not found", err=True)
        sys.exit(1)
    value, ts = found
    click.echo(f"{_show(value)}\t{ts}" if versioned else _show(value))


@main.command("set")
@click.argument("namespace")
@click.argument("key")
@click.argument("value")
@click.option("--string", "as_string", is_flag=True, help="Store VALUE as a string even if it is valid JSON.")
@data_dir_option
@address_option
@kv_errors
def set_command(namespace: str, key: str, value: str, as_string: bool, data_dir: str, address: str | None) -> None:
    """Store VALUE (JSON, or else a string) under KEY; prints the write's timestamp."""
    click.echo(_namespace(data_dir, address, namespace).set(key, _parse(value, as_string)))


@main.command("del")
@click.argument("namespace")
@click.argument("key")
@data_dir_option
@address_option
@kv_errors
def del_command(namespace: str, key: str, data_dir: str, address: str | None) -> None:
    """Delete KEY; exit status 1 if it did not exist."""
    if not _namespace(data_dir, address, namespace).delete(key):
        click.echo(f"{key}: not found", err=True)
        sys.exit(1)
