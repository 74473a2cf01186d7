"""Model-based test: random writes, rotations, reopens and byte damage, checked against a
dict after every step (hypothesis RuleBasedStateMachine)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from kvtest import LONG
from kvtest.faults import flip_bit, truncate, zero_range

from kvcluster import Scope
from kvcluster.journal import VersionedStore
from kvcluster.journal.format import HEADER_SIZE, record_size
from kvcluster.keys import encode_key
from kvcluster.values import pack_value

Entry = tuple[Any, int]
KEYS = st.sampled_from([f"k{i}" for i in range(8)])
INTS = st.integers(-(2**63), 2**64 - 1)  # what msgpack carries
VALUES = st.one_of(INTS, st.text(max_size=30), st.binary(max_size=300), st.lists(INTS, max_size=5))
BUFFER = 4096


class JournalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="kv-stateful-")
        self.store = VersionedStore.open(self.directory, buffer_size=BUFFER)
        self.permanent: dict[str, Entry] = {}
        self.ephemeral: dict[str, Entry] = {}
        self._new_baseline()

    def _new_baseline(self) -> None:
        """The journal now holds `permanent` as its leading (compacted) records, then nothing.

        `tail` then lists the records appended after that prefix, in order, with the
        offset where each ends: damage at an offset keeps exactly those ending before it.
        """
        self.base: dict[str, Entry] = dict(self.permanent)
        self.base_end = self.store.stats()["journal_bytes"]
        self.tail: list[tuple[int, str, Entry | None]] = []  # (record end, key, entry or None) per record

    def _journaled(self, key: str, entry: Entry | None, record: int, rotations: int, before: dict[str, Entry]) -> None:
        end = self.store.stats()["journal_bytes"]
        if self.store.rotations != rotations:  # this write rotated first: the prefix is `before`
            self.base, self.base_end, self.tail = before, end - record, []
        self.tail.append((end, key, entry))

    @rule(key=KEYS, value=VALUES)
    def set_permanent(self, key: str, value: Any) -> None:
        before, rotations = dict(self.permanent), self.store.rotations
        ts = self.store.set("ns", key, value)
        self.permanent[key] = (value, ts)
        self.ephemeral.pop(key, None)
        self._journaled(key, (value, ts), record_size(b"ns", encode_key(key), pack_value(value)), rotations, before)

    @rule(key=KEYS, value=VALUES)
    def set_ephemeral(self, key: str, value: Any) -> None:
        before, rotations = dict(self.permanent), self.store.rotations
        ts = self.store.set("ns", key, value, scope=Scope.EPHEMERAL)
        self.ephemeral[key] = (value, ts)
        if self.permanent.pop(key, None) is not None:  # journaled as a removal
            self._journaled(key, None, record_size(b"ns", encode_key(key), b""), rotations, before)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        before, rotations = dict(self.permanent), self.store.rotations
        ts = self.store.delete("ns", key)
        existed = key in self.permanent or key in self.ephemeral
        assert (ts is not None) == existed
        self.ephemeral.pop(key, None)
        if self.permanent.pop(key, None) is not None:
            self._journaled(key, None, record_size(b"ns", encode_key(key), b""), rotations, before)

    @rule()
    def rotate(self) -> None:
        self.store.rotate()
        self._new_baseline()

    @rule()
    def reopen(self) -> None:
        self._reopen()
        assert self.store.damage == ()  # the journal is unchanged: base and tail still hold

    @precondition(lambda self: self.tail)
    @rule(data=st.data(), kind=st.sampled_from(["flip", "truncate", "zero"]))
    def damage_written_records(self, data: st.DataObject, kind: str) -> None:
        end = self.tail[-1][0]
        offset = data.draw(st.integers(self.base_end, end - 1), label="offset")
        damaged = self._damage(kind, offset, data.draw(st.integers(0, 7), label="bit"))
        self.tail = [record for record in self.tail if record[0] <= damaged]
        expected = dict(self.base)
        for _end, key, entry in self.tail:
            if entry is None:
                expected.pop(key, None)
            else:
                expected[key] = entry
        self.permanent = expected

    @precondition(lambda self: self.base_end > HEADER_SIZE)
    @rule(data=st.data(), kind=st.sampled_from(["flip", "truncate", "zero"]))
    def damage_compacted_prefix(self, data: st.DataObject, kind: str) -> None:
        offset = data.draw(st.integers(HEADER_SIZE, self.base_end - 1), label="offset")
        self._damage(kind, offset, data.draw(st.integers(0, 7), label="bit"))
        survivors = dict(self.store.items("ns"))
        for key, entry in survivors.items():  # a prefix of the compacted state, nothing else
            assert self.base.get(key) == entry
        self.permanent = survivors
        self._new_baseline()

    def _damage(self, kind: str, offset: int, bit: int) -> int:
        """Damage the journal at `offset`; returns where its bytes first changed.

        Truncating (the file is extended with zeros again when it is reopened) and
        zeroing change nothing where the bytes were zeros already: a record whose last
        bytes are zeros survives a cut there, whole and with a valid checksum (found by
        hypothesis: a value ending in 0x00 cut at its last byte).
        """
        self.store.close()
        path = os.path.join(self.directory, "journal")
        with open(path, "rb") as f:
            before = f.read()
        changed = offset
        if kind != "flip":
            changed = next((i for i in range(offset, len(before)) if before[i]), len(before))
        if kind == "flip":
            flip_bit(path, offset, bit)
        elif kind == "truncate":
            truncate(path, offset)
        else:
            zero_range(path, offset, os.path.getsize(path))
        self.ephemeral = {}
        self.store = VersionedStore.open(self.directory, buffer_size=BUFFER)
        return changed

    def _reopen(self) -> None:
        self.store.close()
        self.ephemeral = {}
        self.store = VersionedStore.open(self.directory, buffer_size=BUFFER)

    @invariant()
    def matches_the_model(self) -> None:
        assert dict(self.store.items("ns", scope=Scope.PERMANENT)) == self.permanent
        assert dict(self.store.items("ns", scope=Scope.EPHEMERAL)) == self.ephemeral

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


JournalMachine.TestCase.settings = settings(
    max_examples=400 if LONG else 100, stateful_step_count=60, deadline=None, print_blob=True
)
test_journal_matches_a_dict = JournalMachine.TestCase
