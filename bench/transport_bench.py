"""Round trips between two processes: ZeroMQ (ipc and tcp) against a plain Unix socket.

    python -m bench.transport_bench [--quick] [--out bench/results/transport.json]

The figure behind kvcluster's local fast path: a ZeroMQ round trip hands each message
to an I/O thread in both processes, a Unix socket does not. Each echo server runs in
its own (spawned) process; the client sends a 40-byte message and waits for it back.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from collections.abc import Callable
from typing import Any

import multiprocess
import zmq

from bench.common import check_target, environment, free_port, percentile, print_ratios, write_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "transport.json")

MESSAGE = b"x" * 40


def zmq_echo(endpoint: str, ready: Any) -> None:
    context: zmq.Context[Any] = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(endpoint)
    ready.set()
    while True:
        frames = router.recv_multipart()
        if frames[-1] == b"stop":
            break
        router.send_multipart(frames)
    context.destroy(linger=0)


def unix_echo(path: str, ready: Any) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    ready.set()
    conn, _ = listener.accept()
    while True:
        data = conn.recv(65536)
        if not data or data == b"stop":
            break
        conn.sendall(data)
    conn.close()
    listener.close()


def round_trips(exchange: Callable[[], None], seconds: float) -> list[float]:
    """Per-round-trip times (µs) for `seconds`, after a short warm-up."""
    for _ in range(500):
        exchange()
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        exchange()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def measure_zmq(endpoint: str, seconds: float) -> list[float]:
    ctx = multiprocess.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=zmq_echo, args=(endpoint, ready))
    server.start()
    ready.wait(30)
    context: zmq.Context[Any] = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.connect(endpoint)

    def exchange() -> None:
        dealer.send(MESSAGE)
        dealer.recv()

    try:
        return round_trips(exchange, seconds)
    finally:
        dealer.send(b"stop")
        server.join(10)
        context.destroy(linger=0)


def measure_unix(path: str, seconds: float) -> list[float]:
    ctx = multiprocess.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=unix_echo, args=(path, ready))
    server.start()
    ready.wait(30)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)

    def exchange() -> None:
        client.sendall(MESSAGE)
        client.recv(65536)

    try:
        return round_trips(exchange, seconds)
    finally:
        client.sendall(b"stop")
        server.join(10)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 3.0
    with tempfile.TemporaryDirectory(prefix="kv-transport-") as tmp:
        cases = {
            "zeromq ipc": measure_zmq(f"ipc://{tmp}/echo.sock", seconds),
            "zeromq tcp (loopback)": measure_zmq(f"tcp://127.0.0.1:{free_port()}", seconds),
            "unix stream socket": measure_unix(f"{tmp}/echo.stream", seconds),
        }
    figures = {
        name: {"round_trips": len(s), "p50_us": percentile(s, 50), "p99_us": percentile(s, 99)}
        for name, s in cases.items()
    }
    ratio = figures["zeromq ipc"]["p50_us"] / figures["unix stream socket"]["p50_us"]
    ratios = {"zeromq_ipc_p50_vs_unix_p50": check_target(ratio)}
    for name, figure in figures.items():
        p50, p99, count = figure["p50_us"], figure["p99_us"], figure["round_trips"]
        print(f"{name:24} p50 {p50:6.1f} µs   p99 {p99:6.1f} µs   ({count} round trips)")
    print_ratios(ratios)
    write_json(args.out, {"environment": environment(), "seconds": seconds, "figures": figures, "ratios": ratios})
    png = os.path.splitext(args.out)[0] + ".png"
    plot(figures, png)
    print(f"wrote {args.out} and {png}")


def plot(figures: dict[str, dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(figures)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], [figures[n]["p50_us"] for n in names], height=0.4, label="p50")
    ax.barh([i - 0.2 for i in y], [figures[n]["p99_us"] for n in names], height=0.4, label="p99")
    ax.set_yticks(list(y), names)
    ax.set_xlabel("round trip between two processes (µs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
