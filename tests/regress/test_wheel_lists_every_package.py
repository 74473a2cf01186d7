"""Regression: the new kvcluster.cli package was missing from the wheel (a stale build/
directory hid it locally); `kvcluster` failed with ModuleNotFoundError once installed.
tests/test_packaging.py now builds from a clean copy and checks every package."""

from __future__ import annotations

import tomllib
from pathlib import Path

from test_packaging import source_packages


def test_every_source_package_is_declared() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert set(pyproject["tool"]["setuptools"]["packages"]) == source_packages()
