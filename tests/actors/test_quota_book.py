"""The key quota conversation between the coordinator's `QuotaBook` and the shards'
`QuotaLedger`s, with messages delivered in every order the two sockets allow.

Asks and their grants travel on one socket pair, releases and their answers on
another: each is first-in first-out, but the two overtake each other. Whatever the
order, the book must stay an upper bound of what each shard may insert (so
`max_keys` is never exceeded), and once every message is delivered it must be exact
(so no quota is lost and the namespace is not reported full early).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kvcluster.actors.quota import Admission, QuotaBook, QuotaLedger

NS = "ns"
RAW = NS.encode()


class Shard:
    """One shard's ledger, with its key count, as the shard process keeps them."""

    def __init__(self) -> None:
        self.count = 0
        self.asks: list[int] = []  # wanted, for each ask sent
        self.ledger = QuotaLedger(lambda _ns: self.count, lambda _ns, wanted: self.asks.append(wanted))

    def insert(self) -> bool:
        if self.ledger.admit(RAW) is Admission.FITS:
            self.count += 1
            return True
        return False


def started(book: QuotaBook, shards: list[Shard]) -> None:
    book.configure(NS, 10)
    for index, shard in enumerate(shards):
        assert book.started(index, shard.ledger.report([RAW]))


def test_a_release_that_overtakes_a_grant_does_not_lose_the_grant() -> None:
    book, shards = QuotaBook(2), [Shard(), Shard()]
    started(book, shards)
    ask = shards[0].ledger.report([RAW])
    book.report(0, ask)
    amount, number = book.grant(NS, 0, 6)
    assert amount == 6
    # The coordinator reclaims spare before shard 0 has read its grant: the release
    # answer does not include the grant, which the shard then applies.
    answer = shards[0].ledger.release(RAW, False)
    book.report(0, answer)
    shards[0].ledger.granted(RAW, amount, number)
    assert shards[0].ledger.limit(RAW) == 6
    assert book.free(NS) == 4  # the book still counts the six: no one else gets them
    assert book.grant(NS, 1, 10)[0] == 4


def test_an_ask_that_arrives_after_a_newer_release_answer_is_ignored() -> None:
    book, shards = QuotaBook(2), [Shard(), Shard()]
    started(book, shards)
    amount, number = book.grant(NS, 0, 8)
    shards[0].ledger.granted(RAW, amount, number)
    stale = shards[0].ledger.report([RAW])  # an ask, sent holding 8 ...
    book.report(0, shards[0].ledger.release(RAW, False))  # ... overtaken by a release answer
    assert not book.report(0, stale)
    assert book.free(NS) == 10  # the 8 given back stay free


def test_reports_and_asks_from_a_dead_process_are_refused() -> None:
    book, shards = QuotaBook(1), [Shard()]
    started(book, shards)
    old = shards[0].ledger.report([RAW])
    replacement = Shard()
    assert book.started(0, replacement.ledger.report([RAW]))
    assert not book.current(0, old)
    assert not book.report(0, old)
    assert book.current(0, replacement.ledger.report([RAW]))


def test_malformed_reports_change_nothing() -> None:
    book, shards = QuotaBook(1), [Shard()]
    started(book, shards)
    for bad in (None, 5, [], [1, 2], ["x", 0, {}], [2**62, 0, {NS: -1}], [2**62, 0, {NS: "9"}], [2**62, 0, []]):
        assert not book.report(0, bad)
    assert book.free(NS) == 10


class Conversation(RuleBasedStateMachine):
    """Three shards and the book, with the four queues between them."""

    MAX_KEYS = 12

    def __init__(self) -> None:
        super().__init__()
        self.book = QuotaBook(3)
        self.book.configure(NS, self.MAX_KEYS)
        self.shards = [Shard() for _ in range(3)]
        for index, shard in enumerate(self.shards):
            self.book.started(index, shard.ledger.report([RAW]))
        self.asks: list[deque[tuple[int, Any]]] = [deque() for _ in self.shards]  # wanted, report
        self.grants: list[deque[list[int]]] = [deque() for _ in self.shards]
        self.releases: list[deque[None]] = [deque() for _ in self.shards]
        self.answers: list[deque[Any]] = [deque() for _ in self.shards]

    shard = st.integers(0, 2)

    @rule(index=shard, tries=st.integers(1, 6))
    def insert(self, index: int, tries: int) -> None:
        shard = self.shards[index]
        for _ in range(tries):
            if not shard.insert():
                break
        for wanted in shard.asks:  # the ledger asked: the ask goes out with its report
            self.asks[index].append((wanted, shard.ledger.report([RAW])))
        shard.asks.clear()

    @precondition(lambda self: any(shard.count for shard in self.shards))
    @rule(index=shard)
    def delete(self, index: int) -> None:
        shard = self.shards[index]
        if shard.count:
            shard.count -= 1
            shard.ledger.deleted(RAW)

    @rule(index=shard)
    def coordinator_reads_an_ask(self, index: int) -> None:
        if self.asks[index]:
            wanted, report = self.asks[index].popleft()
            self.book.report(index, report)
            self.grants[index].append(self.book.grant(NS, index, wanted))

    @rule(index=shard)
    def shard_reads_a_grant(self, index: int) -> None:
        if self.grants[index]:
            amount, number = self.grants[index].popleft()
            ledger = self.shards[index].ledger
            ledger.granted(RAW, amount, number)
            ledger.answered(RAW)

    @rule(index=shard)
    def coordinator_reclaims(self, index: int) -> None:
        self.releases[index].append(None)

    @rule(index=shard)
    def shard_reads_a_release(self, index: int) -> None:
        if self.releases[index]:
            self.releases[index].popleft()
            self.answers[index].append(self.shards[index].ledger.release(RAW, False))

    @rule(index=shard)
    def coordinator_reads_a_release_answer(self, index: int) -> None:
        if self.answers[index]:
            self.book.report(index, self.answers[index].popleft())

    @invariant()
    def the_book_bounds_every_shard(self) -> None:
        held = self.book._spaces[NS].held
        for index, shard in enumerate(self.shards):
            assert held[index] >= shard.ledger.limit(RAW), (index, held, shard.ledger.limit(RAW))
        assert sum(held.values()) <= self.MAX_KEYS
        assert sum(shard.count for shard in self.shards) <= self.MAX_KEYS

    def teardown(self) -> None:
        """Deliver everything, then one report from each shard: the book is exact."""
        for index in range(len(self.shards)):
            while self.asks[index] or self.grants[index] or self.releases[index] or self.answers[index]:
                self.coordinator_reads_an_ask(index)
                self.shard_reads_a_grant(index)
                self.shard_reads_a_release(index)
                self.coordinator_reads_a_release_answer(index)
        held = self.book._spaces[NS].held
        for index, shard in enumerate(self.shards):
            self.book.report(index, shard.ledger.report([RAW]))
            assert held[index] == shard.ledger.limit(RAW)
        self.the_book_bounds_every_shard()


TestConversation = Conversation.TestCase
TestConversation.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
