"""I/O errors injected into chosen syscalls of a live process, with `strace -e inject`.

The kernel does the failing: the process under test runs its real code and sees
`-1 EIO` from the N-th msync (or fsync, rename, fallocate), once or from then on.
Plain `write()` is never a target — ZeroMQ's signalling uses it and aborts on
failure, which would test ZeroMQ rather than kvcluster. `scripts/setup --with-strace`
installs strace; where it is missing or ptrace is refused, the tests skip and say so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["SyscallFault", "require_strace"]

ATTACH_TIMEOUT = 10.0


def require_strace() -> str:
    """The strace executable; skips the test where there is none."""
    path = shutil.which("strace")
    if path is None:
        pytest.skip("strace is not installed (scripts/setup --with-strace installs it)")
    return path


def _all_threads_traced(pid: int) -> bool:
    tasks = os.listdir(f"/proc/{pid}/task")
    for task in tasks:
        try:
            status = Path(f"/proc/{pid}/task/{task}/status").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        if "\nTracerPid:\t0\n" in status:
            return False
    return bool(tasks)


class SyscallFault:
    """While entered, the `nth` call of `syscall` by `pid` (any of its threads) fails
    with `error`; with `persistent`, every call from the `nth` on fails.

    Entering returns once strace traces every thread, so the calls counted are exactly
    those made inside the block.
    """

    def __init__(
        self, pid: int, syscall: str, nth: int, *, persistent: bool = False, error: str = "EIO", log: Path
    ) -> None:
        if syscall == "write":
            raise ValueError("never inject into write(): ZeroMQ uses it and aborts")
        self.pid, self.syscall, self.log = pid, syscall, log
        when = f"{nth}+" if persistent else str(nth)
        self.command = [
            require_strace(),
            "-f",  # every thread, and threads started later
            "-qq",
            "-o",
            str(log),
            "-e",
            f"trace={syscall}",
            "-e",
            f"inject={syscall}:error={error}:when={when}",
            "-p",
            str(pid),
        ]
        self.tracer: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SyscallFault:
        self.tracer = subprocess.Popen(self.command, stderr=subprocess.PIPE)
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while not _all_threads_traced(self.pid):  # no event says "attached": poll /proc
            if self.tracer.poll() is not None:
                reason = self.tracer.stderr.read().decode(errors="replace") if self.tracer.stderr else ""
                pytest.skip(f"strace cannot trace here (ptrace refused?): {reason.strip()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"strace did not attach to {self.pid} in {ATTACH_TIMEOUT} s")
            time.sleep(0.005)
        return self

    def fired(self) -> int:
        """How many calls have failed so far."""
        try:
            return self.log.read_text(errors="replace").count("(INJECTED)")
        except FileNotFoundError:
            return 0

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.tracer is not None:
            self.tracer.terminate()  # strace detaches from every thread and exits
            self.tracer.wait(ATTACH_TIMEOUT)
            if self.tracer.stderr is not None:
                self.tracer.stderr.close()
