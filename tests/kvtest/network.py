"""Loopback ports for tests that start routers."""

from __future__ import annotations

from kvcluster.quickbench import free_port  # the one the built-in benchmark uses

__all__ = ["free_port"]
