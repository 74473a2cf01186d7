"""docs/journal-format.md against the code: the worked example's bytes must be what the code writes."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from kvcluster.journal import archive, rotation
from kvcluster.journal.format import (
    TYPE_DELETE,
    TYPE_PUT,
    decode_header,
    encode_batch,
    encode_delete,
    encode_header,
    encode_put,
)
from kvcluster.journal.reader import RecordScan
from kvcluster.scope import Scope
from kvcluster.values import pack_value

DOC = Path(__file__).resolve().parents[2] / "docs" / "journal-format.md"

# The inputs the worked example states.
BASE_TS = 1767222000000000
PUT_TS = 1767225600000000
DELETE_TS = 1767225601000000
BATCH_TS = 1767225602000000
NS = b"users"
KEY = b"u:1"
VALUE = pack_value({"name": "Alice"})
PERMANENT = int(Scope.PERMANENT)

# A marker comment, then directly a ```text block holding one hex string.
HEX_BLOCK = re.compile(r"^<!-- hex:(\w+) -->\n```text\n([0-9a-f]+)\n```$", re.MULTILINE)
# A marker comment, then directly a table whose rows start `| offset | `hex bytes` |`.
DUMP_TABLE = re.compile(r"^<!-- dump:(\w+) -->\n((?:\|.*\n)+)", re.MULTILINE)
DUMP_ROW = re.compile(r"^\| (\d+) \| `([0-9a-f]{2}(?: [0-9a-f]{2})*)` \|")


def expected() -> dict[str, bytes]:
    header = encode_header(BASE_TS)
    put = encode_put(NS, KEY, PUT_TS, PERMANENT, VALUE)
    delete = encode_delete(NS, KEY, DELETE_TS, PERMANENT)
    batch = encode_batch(NS, BATCH_TS, [(KEY, pack_value({"name": "Alicia"})), (b"u:2", None)])
    return {"header": header, "put": put, "delete": delete, "journal": header + put + delete, "batch": batch}


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_hex_strings_match_the_encoder(doc: str) -> None:
    blocks = {name: bytes.fromhex(text) for name, text in HEX_BLOCK.findall(doc)}
    assert blocks == expected()


def test_annotated_dumps_match_the_encoder(doc: str) -> None:
    want = expected()
    tables = dict(DUMP_TABLE.findall(doc))
    assert sorted(tables) == ["delete", "header", "put"]
    offset = 0
    for name in ("header", "put", "delete"):  # in file order: offsets run on from part to part
        data = b""
        for line in tables[name].splitlines()[2:]:  # past the table's head and its |---| line
            match = DUMP_ROW.match(line)
            assert match is not None, line
            assert int(match[1]) == offset + len(data), line
            data += bytes.fromhex(match[2])
        assert data == want[name], name
        offset += len(data)


def test_reader_decodes_the_example() -> None:
    data = expected()["journal"]
    assert decode_header(data).base_ts == BASE_TS
    scan = RecordScan(data, "example")
    assert list(scan) == [
        (TYPE_PUT, NS, KEY, PUT_TS, VALUE),
        (TYPE_DELETE, NS, KEY, DELETE_TS, b""),
    ]
    assert scan.damage is None
    assert scan.position == len(data) == 102


def test_every_failpoint_is_documented(doc: str) -> None:
    names = re.findall(r'failpoint\("([\w.]+)"\)', inspect.getsource(rotation) + inspect.getsource(archive))
    assert len(names) >= 9
    missing = [name for name in names if f'failpoint("{name}")' not in doc]
    assert not missing
