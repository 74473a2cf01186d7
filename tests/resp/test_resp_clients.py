"""The tools everyone has, against the gateway: redis-cli (one-shot, a pipe of commands,
--pipe mass insertion, --scan, the interactive prompt) and redis-benchmark."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from kvtest.resp import Gateway

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")


def cli(gateway: Gateway, *args: str, stdin: bytes | None = None, timeout: float = 30) -> str:
    result = subprocess.run(
        ["redis-cli", "-p", str(gateway.port), *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def test_one_command_per_call(gateway: Gateway, namespace: str) -> None:
    assert cli(gateway, "-n", "0", "PING") == "PONG\n"
    assert cli(gateway, "SET", "cli:k", "hello world") == "OK\n"
    assert cli(gateway, "GET", "cli:k") == "hello world\n"
    assert cli(gateway, "GET", "cli:missing") == "\n"
    assert cli(gateway, "DEL", "cli:k", "cli:missing") == "1\n"
    assert cli(gateway, "BOGUS", "x").startswith("ERR unknown command 'BOGUS', with args beginning with: 'x'")


def test_a_pipe_of_commands(gateway: Gateway, namespace: str) -> None:
    script = f"SELECT {namespace}\nSET a 1\nSET b 2\nMGET a b c\nEXISTS a b c\nDBSIZE\nGETDEL a\nKEYS *\n"
    assert cli(gateway, stdin=script.encode()).splitlines() == ["OK", "OK", "OK", "1", "2", "", "2", "2", "1", "b"]


def test_mass_insertion_with_pipe_mode(gateway: Gateway, namespace: str) -> None:
    def request(*args: bytes) -> bytes:
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)

    data = request(b"SELECT", namespace.encode()) + b"".join(
        request(b"SET", b"mass:%d" % i, os.urandom(16)) for i in range(5000)
    )
    out = cli(gateway, "--pipe", stdin=data, timeout=60)
    assert "errors: 0, replies: 5001" in out
    assert cli(gateway, "-n", "0", "--scan", "--pattern", "mass:*") == ""  # not in namespace default
    assert cli(gateway, stdin=f"SELECT {namespace}\nDBSIZE\n".encode()).split() == ["OK", "5000"]


def test_scan_from_the_shell(gateway: Gateway) -> None:
    cli(gateway, "MSET", *[arg for i in range(30) for arg in (f"scan:{i}", "v")])
    try:
        found = cli(gateway, "--scan", "--pattern", "scan:2*").split()
        assert sorted(found) == sorted(["scan:2", *[f"scan:2{i}" for i in range(10)]])
    finally:
        cli(gateway, "DEL", *[f"scan:{i}" for i in range(30)])


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux script is not installed")
def test_the_interactive_prompt_reads_command_docs(gateway: Gateway) -> None:
    """redis-cli's prompt asks COMMAND DOCS for its help: run it on a pseudo-terminal."""
    result = subprocess.run(
        ["script", "-qc", f"redis-cli -p {gateway.port}", "/dev/null"],
        input=b"HELP GET\nPING\nQUIT\n",
        capture_output=True,
        env={**os.environ, "TERM": "dumb"},
        timeout=30,
        check=False,
    )
    out = result.stdout.decode(errors="replace")
    assert "Get the value of a key" in out
    assert "PONG" in out


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark is not installed")
@pytest.mark.parametrize("pipeline", ["1", "16"])
def test_redis_benchmark_runs_without_errors(gateway: Gateway, pipeline: str) -> None:
    result = subprocess.run(
        ["redis-benchmark", "-p", str(gateway.port), "-t", "get,set", "-n", "2000", "-q", "-P", pipeline],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = [line for line in result.stdout.replace("\r", "\n").splitlines() if "requests per second" in line]
    assert [line.split(":")[0] for line in summary] == ["SET", "GET"], result.stdout
    assert "error" not in (result.stdout + result.stderr).lower()
