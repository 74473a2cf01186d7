"""Fuzzing (bar item 12): the request decoder with the shard's request handling behind
it, the journal record decoder with the batch and prepare decoders behind it, and the
archive reader — each fed mutants of valid inputs for FUZZ_SECONDS (60 s each by
default, 600 with KV_LONG=1). None may crash, raise anything but its declared errors,
take over a second on one input, or grow memory without bound."""

from __future__ import annotations

import os
import random
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
from kvtest import scale
from kvtest.fuzzing import fuzz

from kvcluster.actors.shard_state import ShardState
from kvcluster.codec import VERSION, Limits, Op, decode_reply, decode_request, encode_reply, encode_request
from kvcluster.config import Durability
from kvcluster.errors import InvalidRequest
from kvcluster.journal import VersionedStore
from kvcluster.journal.archive import ArchiveScan, list_archives
from kvcluster.journal.format import TYPE_BATCH, TYPE_PREPARE, HeaderError, decode_batch, decode_header, decode_prepare
from kvcluster.journal.reader import RecordScan
from kvcluster.scope import Scope
from kvcluster.values import pack_value

pytestmark = pytest.mark.slow

FUZZ_SECONDS = float(os.environ.get("KV_FUZZ_SECONDS", scale(60, 600)))
NS = b"default"
V = pack_value("value")


def request_corpus(epoch: int) -> list[bytes]:
    k, k2 = b"key-1", b"key-2"
    shapes: list[tuple[Op, tuple[object, ...]]] = [
        (Op.PING, ()),
        (Op.GET, (NS, k)),
        (Op.SET, (NS, k, V, 1)),
        (Op.SET, (NS, k2, pack_value({"a": [1, 2.5, None, True]}), 2)),
        (Op.UPDATE, (NS, k, V)),
        (Op.EXISTS, (NS, k)),
        (Op.CONSUME, (NS, k2)),
        (Op.DELETE, (NS, k)),
        (Op.COUNT, (NS,)),
        (Op.SCAN, (NS, None, 10, None)),
        (Op.SHARD_STATS, ()),
        (Op.MGET, (NS, [k, k2])),
        (Op.MSET, (NS, [[k, V], [k2, V]], 1)),
        (Op.MDELETE, (NS, [k, k2])),
        (Op.MCONSUME, (NS, [k, k2])),
        (Op.ATOMIC, (NS, "set", [[k, V], [k2, V]], 1)),
        (Op.ATOMIC, (NS, "delete", [k], 1)),
        (Op.TXN_PREPARE, (NS, b"txn-1", 2**62, "set", [[k, V]], 1)),
        (Op.TXN_COMMIT, (b"txn-1", 10**15)),
        (Op.TXN_ABORT, (b"txn-1",)),
    ]
    corpus = [encode_request(seq, epoch, op, *args) for seq, (op, args) in enumerate(shapes, 1)]
    rng = random.Random(1)
    corpus += [msgpack.packb([VERSION, 1, epoch, rng.choice(list(Op)), *random_objects(rng, 3)]) for _ in range(20)]
    return corpus


def random_objects(rng: random.Random, count: int, depth: int = 0) -> list[object]:
    """Arbitrary msgpack-able values: what a hostile client could put in a request."""
    makers: list[Callable[[], object]] = [
        lambda: None,
        lambda: rng.random() < 0.5,
        lambda: rng.randint(-(2**63), 2**64 - 1),
        lambda: rng.random() * 1e300,
        lambda: rng.randbytes(rng.randint(0, 40)),
        lambda: "s" * rng.randint(0, 40),
        lambda: [NS, b"k", V, 1],
        lambda: random_objects(rng, rng.randint(0, 4), depth + 1),
        lambda: dict(zip("abc", random_objects(rng, 3, depth + 1), strict=True)),
    ]
    return [makers[rng.randrange(len(makers) if depth < 3 else 7)]() for _ in range(count)]


@pytest.fixture
def shard_state(tmp_path: Path) -> Iterator[ShardState]:
    store = VersionedStore.open(str(tmp_path / "store"), durability=Durability.NONE)
    state = ShardState(0, store, 1, lambda ns, wanted: None)
    state.sync_namespaces({"default": [0, 0], "limited": [5, 100]})
    yield state
    store.close()


def test_the_request_decoder_and_the_shard_behind_it(shard_state: ShardState) -> None:
    options = Limits().unpack_options()

    def target(data: bytes) -> None:
        request = decode_request(data, options)  # InvalidRequest: a bad frame, answered so
        shard_state.handle(request)  # any exception from here would kill a shard

    report = fuzz(target, request_corpus(epoch=1), FUZZ_SECONDS, (InvalidRequest,))
    assert report.inputs > 1000 and report.rejected < report.inputs  # some mutants got through


def test_the_reply_decoder() -> None:
    corpus = [encode_reply(1, [V, 123]), encode_reply(2, {"ts": 5, "errors": {}}), encode_reply(3, None)]
    report = fuzz(decode_reply, corpus, FUZZ_SECONDS / 6, (InvalidRequest,))
    assert report.inputs > 1000


def journal_image(directory: str) -> bytes:
    """A journal holding every kind of record."""
    store = VersionedStore.open(directory, durability=Durability.NONE)
    try:
        store.set_raw(NS, b"a", V)
        store.set_raw(NS, b"b", pack_value([1, 2, 3]))
        store.delete_raw(NS, b"a")
        store.set_many_raw(NS, [(b"c", V), (b"d", V)], Scope.PERMANENT)
        ts = store.prepare_raw(NS, b"txn", 2**62, [(b"e", V, Scope.PERMANENT), (b"f", None, Scope.PERMANENT)])
        store.commit_raw(b"txn", ts)
        store.prepare_raw(NS, b"txn2", 2**62, [(b"g", V, Scope.PERMANENT)])
        store.flush()
        end = store._writer.position
    finally:
        store.close()
    with open(os.path.join(directory, "journal"), "rb") as f:
        return f.read(end + 64)  # the records and a little zero tail


def scan_journal(data: bytes) -> None:
    """What replay does with a journal's bytes: the header, then the records."""
    decode_header(data)  # HeaderError: refused before any record is read
    scan = RecordScan(data, "fuzzed")
    for rtype, _ns, _key, _ts, value in scan:
        try:
            if rtype == TYPE_BATCH:
                decode_batch(value)
            elif rtype == TYPE_PREPARE:
                decode_prepare(value)
        except ValueError:
            pass  # what replay treats as a damaged record
    assert scan.position <= len(data)


def test_the_journal_record_decoder(tmp_path: Path) -> None:
    image = journal_image(str(tmp_path / "j"))
    report = fuzz(scan_journal, [image], FUZZ_SECONDS, (HeaderError,))
    assert report.inputs > 1000


def test_the_archive_reader(tmp_path: Path) -> None:
    """Half the time the compressed bytes are mutated (zlib errors, truncation, trailing
    data); half the time a mutated journal is compressed (the windowed record scan)."""
    image = journal_image(str(tmp_path / "j"))
    compressed = zlib.compress(image)
    directory = tempfile.mkdtemp(dir=tmp_path)
    path = os.path.join(directory, "fuzzed.zz")
    rng = random.Random(5)

    def target(data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data if rng.random() < 0.5 else zlib.compress(data))
        scan = ArchiveScan(path)
        for _record in scan:
            pass
        assert scan.damage is None or scan.damage.offset >= 0

    report = fuzz(target, [compressed, image], FUZZ_SECONDS, ())
    assert report.inputs > 1000
    assert list_archives(directory) == []  # nothing here looks like an archive to replay
