"""The wire code, read as source: no pickle (or anything that unpickles) anywhere in the
package, no `send_pyobj`/`recv_pyobj`, and every ZeroMQ socket the package creates has
a message size limit set where it is created. Static checks: they fail on the line
that breaks the rule, before any process could be fooled by a frame."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("kvcluster", "journal", "router", "actors", "client")  # the installed package's sources
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "shelve", "marshal", "cloudpickle", "jsonpickle"}
PYOBJ = {"send_pyobj", "recv_pyobj", "send_serialized", "recv_serialized"}


def sources() -> Iterator[Path]:
    for directory in PACKAGE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            if not path.is_symlink() and all(not part.is_symlink() for part in path.parents if ROOT in part.parents):
                yield path


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_the_package_sources_are_found() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in sources()}
    assert {"kvcluster/codec.py", "actors/shard.py", "client/links.py", "router/proxy.py"} <= names


@pytest.mark.parametrize("path", list(sources()), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_pickle_and_no_pyobj(path: Path) -> None:
    problems = []
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            problems += [
                f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNPICKLERS
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLERS:
            problems.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr in PYOBJ:
            problems.append(f"line {node.lineno}: .{node.attr}")
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)


def _creates_zmq_socket(node: ast.AST) -> bool:
    """`<something>.socket(zmq.KIND)` (or a variable kind) — a ZeroMQ socket, not socket.socket()."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "socket"):
        return False
    return not (isinstance(node.func.value, ast.Name) and node.func.value.id == "socket")


def _sets_max_message_size(function: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "setsockopt"
        and bool(node.args)
        and isinstance(node.args[0], ast.Attribute)
        and node.args[0].attr == "MAXMSGSIZE"
        for node in ast.walk(function)
    )


@pytest.mark.parametrize("path", list(sources()), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_zeromq_socket_gets_a_message_size_limit_where_it_is_made(path: Path) -> None:
    missing = []
    for function in ast.walk(parsed(path)):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            creations = [n for n in ast.walk(function) if isinstance(n, ast.Call) and _creates_zmq_socket(n)]
            if creations and not _sets_max_message_size(function):
                missing.append(f"{function.name} (line {creations[0].lineno})")
    assert not missing, f"{path.relative_to(ROOT)}: ZeroMQ sockets without MAXMSGSIZE in " + ", ".join(missing)


def test_the_socket_rule_would_catch_a_socket_without_a_limit() -> None:
    bad = ast.parse("def f(ctx):\n    s = ctx.socket(zmq.DEALER)\n    s.connect('x')\n")
    good = ast.parse("def f(ctx):\n    s = ctx.socket(zmq.DEALER)\n    s.setsockopt(zmq.MAXMSGSIZE, 10)\n")
    (bad_f,), (good_f,) = bad.body, good.body
    assert any(_creates_zmq_socket(n) for n in ast.walk(bad_f)) and not _sets_max_message_size(bad_f)
    assert _sets_max_message_size(good_f)
