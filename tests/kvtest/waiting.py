"""Waiting for a cluster to reach a state: poll a condition until a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_until"]


def wait_until(condition: Callable[[], bool], what: str = "the condition", timeout: float = 60.0) -> None:
    """Return once `condition()` is true; AssertionError naming `what` after `timeout` s.
    (Processes start, die and recover on their own time: there is no event to wait on.)"""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)
