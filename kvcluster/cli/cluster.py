"""`kvcluster start | stop | status | rotate`: running a cluster from the shell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any, cast

import click

from kvcluster.cli import main
from kvcluster.cli.options import address_option, data_dir_option, kv_errors, retention_options, target
from kvcluster.config import Durability

STOP_TIMEOUT = 30.0


@main.command()
@data_dir_option
@click.option("--shards", type=click.IntRange(1, 1024), default=None, help="Shards of a new cluster [one per core].")
@click.option("--durability", type=click.Choice([d.value for d in Durability]), default="interval", show_default=True)
@click.option("--max-namespaces", type=click.IntRange(0), default=0, help="0: no limit.")
@click.option("--listen", default=None, help="Also serve remote clients through a router at tcp://host:port.")
@click.option(
    "--curve/--no-curve",
    default=None,
    help="Let in only clients with allowed CURVE keys [on unless --listen is loopback; required beyond it].",
)
@click.option(
    "--resp",
    default=None,
    metavar="HOST:PORT",
    help="Also serve the Redis protocol (redis-cli, Redis clients) at a loopback HOST:PORT, e.g. 127.0.0.1:6380.",
)
@click.option("--foreground", is_flag=True, help="Stay attached; ^C stops the cluster.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for every shard.")
@retention_options
@kv_errors
def start(
    data_dir: str,
    shards: int | None,
    durability: str,
    max_namespaces: int,
    listen: str | None,
    curve: bool | None,
    resp: str | None,
    foreground: bool,
    timeout: float,
    retention: dict[str, Any] | None,
) -> None:
    """Start a cluster on DATA_DIR and return once every shard serves.

    Retention limits given here are kept in cluster.json (a restart without them keeps
    them); 0 keeps no archive, none sets no limit.
    """
    from kvcluster.actors.supervisor import SupervisorConfig
    from kvcluster.cluster import _check_shard_count, _config, launch, wait_until_ready
    from kvcluster.config import DEFAULT_SHARD_BUFFER_SIZE

    path = os.path.abspath(data_dir)
    _check_shard_count(path, shards)
    config = SupervisorConfig(
        _config(
            path, shards, durability, max_namespaces, DEFAULT_SHARD_BUFFER_SIZE, listen, retention, curve, resp=resp
        )
    )
    process = launch(config, detach=not foreground)
    try:
        wait_until_ready(path, process, timeout, resp)
    except BaseException:
        process.kill()
        raise
    click.echo(f"kvcluster is running on {path} (supervisor pid {process.pid}); logs in {path}/logs")
    click.echo(f"  python: kvcluster.connect({path!r})")
    if listen and config.coordinator.curve:
        server_key = os.path.join(path, "keys", "server.key")
        click.echo(f"  remote: kvcluster.connect({listen!r}, key=YOUR.key_secret, server_key={server_key!r})")
        click.echo(f"          (let a client in: kvcluster keygen NAME --allow {path})")
    elif listen:
        click.echo(f"  remote: kvcluster.connect({listen!r})")
    if resp:
        host, port = resp.rsplit(":", 1)
        click.echo(f"  redis:  redis-cli -h {host.strip('[]')} -p {port}   (the RESP gateway)")
    click.echo(f"  stop:   kvcluster stop --data-dir {path}")
    if foreground:
        _wait_attached(process)


def _wait_attached(process: subprocess.Popen[bytes]) -> None:
    def forward(signum: int, frame: object) -> None:
        process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    process.wait()
    click.echo("kvcluster stopped")


@main.command()
@data_dir_option
@click.option("--timeout", type=float, default=STOP_TIMEOUT, show_default=True, help="Seconds before forcing.")
@kv_errors
def stop(data_dir: str, timeout: float) -> None:
    """Stop the cluster on DATA_DIR: gracefully, then by force after the timeout."""
    from kvcluster.datadir import DataDir, PidLock

    lock = PidLock(DataDir.at(data_dir).pidfile)
    pid = lock.read()
    if pid is None or not lock.held_elsewhere():
        raise click.ClickException(f"no cluster is running on {os.path.abspath(data_dir)}")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while lock.held_elsewhere() and time.monotonic() < deadline:
        time.sleep(0.05)
    if lock.held_elsewhere():
        click.echo(f"the cluster did not stop in {timeout:g} s; killing its processes", err=True)
        os.killpg(pid, signal.SIGKILL)
    click.echo("kvcluster stopped")


@main.command()
@data_dir_option
@address_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the same as client.stats()).")
@kv_errors
def status(data_dir: str, address: str | None, as_json: bool) -> None:
    """Show the cluster's processes, keys, journals and namespaces."""
    from kvcluster import connect

    with connect(target(data_dir, address), timeout=5.0) as client:
        stats = client.stats()
    if as_json:
        click.echo(json.dumps(stats, indent=2, sort_keys=True))
        return
    _print_table(stats)


def _print_table(stats: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    coordinator = cast(dict[str, Any], stats["coordinator"])
    console = Console()
    console.print(
        f"[bold]kvcluster[/bold] on {stats['data_dir']} — epoch {stats['epoch']}, durability {stats['durability']}, "
        f"coordinator pid {coordinator['pid']}, {'ready' if stats['ready'] else '[red]not ready[/red]'}"
    )
    table = Table("shard", "pid", "keys", "journal", "rss", "cpu %", "ops", "restarts")
    for shard in cast(list[dict[str, Any]], stats["shards"]):
        table.add_row(
            str(shard["id"]),
            str(shard["pid"]),
            _number(shard["keys"]),
            _size(shard["journal_bytes"]),
            _size(shard["rss_bytes"]),
            "-" if shard["cpu_percent"] is None else f"{shard['cpu_percent']:.1f}",
            _number(shard["ops_total"]),
            str(shard["restarts"]),
        )
    console.print(table)
    for name, label in (("router", "router"), ("resp", "RESP gateway")):
        service = stats.get(name)
        if isinstance(service, dict):
            state = "serving" if service.get("serving") else "[red]not serving[/red]"
            console.print(
                f"{label} {service.get('address')}: {state}, pid {service.get('pid')}, "
                f"rss {_size(service.get('rss_bytes'))}, restarts {service.get('restarts')}"
            )
    spaces = Table("namespace", "keys", "max keys", "max value bytes")
    for name, info in sorted(cast(dict[str, dict[str, Any]], stats["namespace_stats"]).items()):
        spaces.add_row(
            name, _number(info["keys"]), _number(info["max_keys"] or None), _size(info["max_value_bytes"] or None)
        )
    console.print(spaces)


def _number(value: object) -> str:
    return "-" if value is None else f"{value:,}"


def _size(value: object) -> str:
    if not isinstance(value, int):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


@main.command()
@data_dir_option
@address_option
@kv_errors
def rotate(data_dir: str, address: str | None) -> None:
    """Rotate every shard's journal now."""
    from kvcluster import connect

    with connect(target(data_dir, address)) as client:
        client.rotate_journals()
    click.echo("rotated")


@main.command()
@data_dir_option
@address_option
@click.option("--shards", type=click.IntRange(2, 1024), required=True, help="Shards after the resize (more than now).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@kv_errors
def resize(data_dir: str, address: str | None, shards: int, as_json: bool) -> None:
    """Grow the cluster to SHARDS shards, online: only keys whose shard changes move."""
    from kvcluster import connect

    with connect(target(data_dir, address)) as client:
        summary = client.resize(shards=shards)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    click.echo(
        f"resized from {summary['from']} to {summary['to']} shards: "
        f"{summary['moved']:,} keys moved in {summary['seconds']:.2f} s"
    )


@main.command()
@click.argument("name")
@click.option("--out", type=click.Path(file_okay=False), default=".", show_default=True, help="Where the pair goes.")
@click.option(
    "--allow",
    "allow_in",
    type=click.Path(file_okay=False),
    default=None,
    help="Also let this client into the cluster at this data directory.",
)
@kv_errors
def keygen(name: str, out: str, allow_in: str | None) -> None:
    """Make a CURVE key pair NAME.key (public) and NAME.key_secret for a remote client.

    The client connects with kvcluster.connect("tcp://host:port", key="NAME.key_secret",
    server_key="DATA/keys/server.key"); the router lets it in once NAME.key is in
    DATA/keys/allowed/ (--allow DATA puts it there; the router notices by itself).
    """
    from kvcluster import curve

    public, secret = curve.generate(out, name)
    click.echo(f"public key: {public}\nsecret key: {secret} (keep it private)")
    if allow_in is not None:
        allowed = curve.allow(os.path.abspath(allow_in), public)
        click.echo(f"allowed in {allow_in}: {allowed}")
