"""The whole benchmark suite, one benchmark after another (never two at once: they
would share the cores they measure).

    .venv/bin/python -m bench                      # every benchmark, ~20 minutes
    .venv/bin/python -m bench --quick              # smoke runs (where a benchmark has one)
    .venv/bin/python -m bench ops mixed memory     # some of them

`scripts/bench` installs what the peers need (redis-server) and runs this. Each
benchmark runs in its own process and writes bench/results/<name>.json and .png; a
summary of which ran and how long each took is printed at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import make_console, print_table

# name -> accepts --quick; in the order they run (the quickest answers first)
BENCHMARKS: dict[str, bool] = {
    "ops": True,
    "mixed": True,
    "batch": True,
    "memory": False,
    "cluster": True,
    "distribution": False,
    "transport": True,
    "journal": True,
    "snapshot": True,
    "resize": False,
    "fault": True,
    "resp": True,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="name", help=f"of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke runs where a benchmark has them")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}")
    console = make_console()
    rows: list[list[object]] = []
    failed = 0
    for name in args.names or BENCHMARKS:
        command = [sys.executable, "-m", f"bench.{name}_bench"]
        if args.quick and BENCHMARKS[name]:
            command.append("--quick")
        console.rule(f"bench.{name}_bench")
        started = time.perf_counter()
        code = subprocess.call(command)
        failed += code != 0
        rows.append([name, f"{time.perf_counter() - started:.0f}", "ok" if code == 0 else f"[red]exit {code}[/red]"])
    print_table("benchmarks", ["benchmark", "seconds", "result"], rows, console)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
