from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kvtest import LONG

from kvcluster.journal import VersionedStore

pytest_plugins = ["kvtest.clusters", "kvtest.redis_cluster"]

LONG_TIMEOUT = 3 * 3600  # seconds a test may take under KV_LONG=1 (the soak alone is 60 min)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ini's 300 s bounds a default run; the long loops (1,000 kills, 10 minutes of
    fuzzing, the soak) need more, and a marker outranks the ini."""
    if LONG:
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(LONG_TIMEOUT))


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
