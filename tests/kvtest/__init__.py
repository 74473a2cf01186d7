"""Shared test machinery: fault injection through the filesystem seam, byte surgery,
child processes that write and get killed, and the CI/long scale switch."""

from __future__ import annotations

import os

LONG = os.environ.get("KV_LONG") == "1"


def scale(ci: int, long: int) -> int:
    """How many cycles a fault loop runs: `ci` by default, `long` under KV_LONG=1."""
    return long if LONG else ci
