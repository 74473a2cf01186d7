from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvcluster.journal import VersionedStore

pytest_plugins = ["kvtest.clusters"]


@pytest.fixture
def store_dir(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def open_store(store_dir: str) -> Iterator[Callable[..., VersionedStore]]:
    """Open stores (in `store_dir` unless told otherwise); all are closed at teardown."""
    opened: list[VersionedStore] = []

    def _open(directory: str | None = None, **options: Any) -> VersionedStore:
        store = VersionedStore.open(directory or store_dir, **options)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()
