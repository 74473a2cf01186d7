"""Replaying a store's history while its owner writes and rotates it (as a running shard does):
every read must give the state at the moment asked, whatever rotation did meanwhile."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from kvcluster import Retention
from kvcluster.journal import VersionedStore, recover_at
from kvcluster.journal.following import replay_history
from kvcluster.pitr import iso_time

OpenStore = Callable[..., VersionedStore]
ROTATIONS = 60


@pytest.fixture
def interleaved() -> Iterator[None]:
    """Threads switch every 0.5 ms, not 5: more rotations land in the middle of a read."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("interleaved")
def test_reads_during_rotations_see_the_moment_asked(open_store: OpenStore, store_dir: str) -> None:
    store = open_store(retention=Retention.keep_all(), buffer_size=1 << 16)
    for i in range(300):
        store.set("ns", f"k{i % 50}", i)
    store.delete("ns", "k7")
    start = store.set("ns", "last", "before")
    initial = {where: ts for where, (_value, ts) in recover_at(store_dir, start).items()}
    written: list[tuple[str, int]] = []  # (key, ts) of every write the owner made since, in order

    def churn() -> None:  # the owner: overwrites every key, rotating every 40 writes
        i = 0
        while store.rotations < ROTATIONS:
            key = f"k{i % 50}"
            written.append((key, store.set("ns", key, -i)))
            i += 1
            if i % 40 == 0:
                store.rotate()

    owner = threading.Thread(target=churn)
    owner.start()
    expected, seen, reads = dict(initial), 0, 0
    try:
        while owner.is_alive() or reads == 0:
            reads += 1
            known = len(written)  # a moment just past: its writes may sit in the newest files
            for key, ts in written[seen:known]:
                expected["ns", key] = ts
            seen = known
            moment = written[known - 1][1] if known else start
            replayed = replay_history(store_dir, moment)
            state = {
                (ns.decode(), key.decode()): ts
                for ns, space in replayed.replay.entries.items()
                for key, (_value, ts) in space.items()
            }
            assert state == expected, f"read {reads}, at {moment}"
            assert replayed.earliest == 0 and replayed.newest >= moment
    finally:
        owner.join()
    assert reads > 10


def test_iso_time_of_a_far_moment() -> None:
    assert iso_time(2**62).startswith("after")


def test_a_rotation_between_listing_and_reading_is_caught(
    open_store: OpenStore, store_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the listing saw only the journal; a rotation then renamed it into an
    archive before it was read, so the history seemed to start at that rotation's cut
    (`earliest` wrong: a recovery to an earlier moment would have been refused)."""
    from kvcluster.journal import following
    from kvcluster.journal.pitr import HistoryFile, history

    store = open_store(retention=Retention.keep_all(), buffer_size=1 << 16)
    first = store.set("ns", "a", 1)
    listings = 0

    def listing_then_rotation(directory: str) -> list[HistoryFile]:
        nonlocal listings
        files = history(directory)
        listings += 1
        if listings == 1:  # the race, made to happen: the owner rotates right after the listing
            store.set("ns", "a", 2)
            store.rotate()
        return files

    monkeypatch.setattr(following, "history", listing_then_rotation)
    replayed = replay_history(store_dir, first)
    assert replayed.earliest == 0
    assert {key: value for key, (value, _ts) in replayed.replay.entries[b"ns"].items()} == {b"a": b"\x01"}
    assert listings >= 3  # listed, checked and found the race, read again
