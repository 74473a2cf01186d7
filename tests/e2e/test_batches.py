"""Batches as large as the local engine's messages bound them, against a real 3-shard
cluster, through the sync and the asyncio client (the `api` fixture): a BEST_EFFORT
batch larger than one message to a shard goes as several; an ALL_OR_NOTHING one too
large for one message per shard is refused. The batch API both backends share —
set_many / get_many / delete_many / consume_many in both modes, per-key errors,
limits — is tested on both in tests/conformance/test_batch_modes.py."""

from __future__ import annotations

from typing import Any

import pytest

from kvcluster import BatchMode, InvalidRequest

pytestmark = pytest.mark.slow

AON = BatchMode.ALL_OR_NOTHING
BEST = BatchMode.BEST_EFFORT


def spread(count: int, prefix: str = "k") -> dict[str, int]:
    """`count` keys, enough of them to land on every shard."""
    return {f"{prefix}{i:04d}": i for i in range(count)}


def test_big_best_effort_batches_go_in_several_messages(api: Any) -> None:
    items = spread(70_000, "big")  # more items than one message to one shard carries
    assert api.set_many(items, BEST).processed == 70_000
    result = api.get_many(list(items), BEST)
    assert result.processed == 70_000 and result.data == items
    assert api.delete_many(list(items), BEST).processed == 70_000


def test_an_all_or_nothing_batch_too_big_for_one_message_per_shard_is_refused(api: Any) -> None:
    with pytest.raises(InvalidRequest, match="BEST_EFFORT"):
        api.set_many(spread(200_000), AON)
    assert len(api) == 0
