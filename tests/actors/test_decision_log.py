"""The coordinator's decision log: a commit applied everywhere is still answered as a
commit to a client that asks late; it goes only COMMIT_KEPT_FOR past its deadline.

Regression: the long 2PC kill loop (300 cycles) found a batch reported as failed
(BatchFailed, "not decided before its deadline") although it was committed and
applied. The coordinator had been killed right after journaling the commit; its
successor pushed the commit to the shards, which confirmed it, and the record was
deleted; then the client's queued TXN_DECIDE arrived past the deadline, found nothing,
and was answered with a presumed abort.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvcluster.actors import decisions
from kvcluster.actors.decisions import COMMIT_KEPT_FOR, DecisionLog
from kvcluster.config import Durability

TXN = b"t" * 16
NOW = 1_800_000_000_000_000  # µs: the clock, as the tests set it
DEADLINE = NOW + 5_000_000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    now = [NOW]
    monkeypatch.setattr(decisions, "_now", lambda: now[0])
    return now


def test_an_applied_commit_is_still_a_commit_to_a_late_asker(tmp_path: Path, clock: list[int]) -> None:
    log = DecisionLog(str(tmp_path), Durability.NONE)
    assert log.decide(TXN, "commit", NOW, DEADLINE, [0, 1]) == ["commit", NOW]
    clock[0] = DEADLINE + 1  # the coordinator pushed it past the deadline: no answer reached the client
    log.applied([TXN], 0)
    log.applied([TXN], 1)
    assert log.commits_kept() == 0  # nothing left to push
    clock[0] = DEADLINE + 10_000_000  # the client's retry arrives after that
    assert log.decide(TXN, "commit", NOW, DEADLINE, [0, 1]) == ["commit", NOW]
    log.close()
    reopened = DecisionLog(str(tmp_path), Durability.NONE)  # a coordinator restarted meanwhile
    assert reopened.decide(TXN, "commit", NOW, DEADLINE, [0, 1]) == ["commit", NOW]
    assert reopened.status(TXN, DEADLINE) == ["commit", NOW]
    reopened.close()


def test_a_commit_its_client_applied_before_the_deadline_goes_at_once(tmp_path: Path, clock: list[int]) -> None:
    log = DecisionLog(str(tmp_path), Durability.NONE)
    log.decide(TXN, "commit", NOW, DEADLINE, [0, 1])
    log.applied([TXN], 0)
    log.applied([TXN], 1)
    assert TXN not in log.decisions  # no memory kept per batch in the common case
    log.close()


def test_a_commit_read_back_after_a_restart_is_kept_once_applied(tmp_path: Path, clock: list[int]) -> None:
    log = DecisionLog(str(tmp_path), Durability.NONE)
    log.decide(TXN, "commit", NOW, DEADLINE, [0, 1])
    log.close()  # the coordinator died before its answer went out
    again = DecisionLog(str(tmp_path), Durability.NONE)
    again.applied([TXN], 0)
    again.applied([TXN], 1)  # before the deadline: a snapshot's cut applied it
    assert again.decide(TXN, "commit", NOW, DEADLINE, [0, 1]) == ["commit", NOW]
    again.close()


def test_an_applied_commit_goes_after_its_grace_and_an_unapplied_one_stays(tmp_path: Path, clock: list[int]) -> None:
    log = DecisionLog(str(tmp_path), Durability.NONE)
    other = b"u" * 16
    log.decide(TXN, "commit", NOW, DEADLINE, [0, 1])
    log.decide(other, "commit", NOW, DEADLINE, [0, 1])
    clock[0] = DEADLINE + 1
    log.applied([TXN, other], 0)
    log.applied([TXN], 1)  # `other` still waits for shard 1
    clock[0] = DEADLINE + COMMIT_KEPT_FOR - 1
    log.purge()
    assert TXN in log.decisions
    clock[0] = DEADLINE + COMMIT_KEPT_FOR + 1
    log.purge()
    assert TXN not in log.decisions
    assert log.decisions[other].left == {1}  # pushed until applied, however late
    assert log.unapplied() == [(other, log.decisions[other])]
    log.close()
