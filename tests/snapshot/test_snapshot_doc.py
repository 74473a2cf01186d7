"""docs/snapshot-format.md against the code: the worked example's bytes must be what the code writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvcluster import snapshot
from kvcluster.snapshot import open_snapshot, verify_snapshot, write_snapshot
from kvcluster.values import pack_value, unpack_value

DOC = Path(__file__).resolve().parents[2] / "docs" / "snapshot-format.md"

# The inputs the worked example states.
CUT = 1767225600000000
CREATED = 1767225601000000
NAMESPACES = {"users": {"max_keys": 0, "max_value_bytes": 0}}
ROWS = [
    (b"users", b"u:1", pack_value({"name": "Alice"}), 1767225500000000),
    (b"users", b"u:2", pack_value(2), 1767225550000000),
]

# A marker comment, then directly a ```text block holding one hex string.
HEX_BLOCK = re.compile(r"^<!-- hex:(\w+) -->\n```text\n([0-9a-f]+)\n```$", re.MULTILINE)
# A marker comment, then directly a table whose rows start `| offset | `hex bytes` |`.
DUMP_TABLE = re.compile(r"^<!-- dump:(\w+) -->\n((?:\|.*\n)+)", re.MULTILINE)
DUMP_ROW = re.compile(r"^\| (\d+) \| `([0-9a-f]{2}(?: [0-9a-f]{2})*)` \|")


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture
def example(tmp_path: Path) -> Path:
    path = tmp_path / "example.kvs"
    write_snapshot(str(path), ROWS, cut=CUT, created=CREATED, namespaces=NAMESPACES)
    return path


def parts(data: bytes) -> dict[str, bytes]:
    body_start = 20 + int.from_bytes(data[12:16], "little")
    return {
        "header": data[:body_start],
        "block": data[body_start:-40],
        "footer": data[-40:],
        "snapshot": data,
    }


def test_hex_strings_match_the_writer(doc: str, example: Path) -> None:
    blocks = {name: bytes.fromhex(text) for name, text in HEX_BLOCK.findall(doc)}
    assert blocks == parts(example.read_bytes())
    assert len(blocks["snapshot"]) == 217  # as the prose says


def test_annotated_dumps_match_the_writer(doc: str, example: Path) -> None:
    want = parts(example.read_bytes())
    tables = dict(DUMP_TABLE.findall(doc))
    offset = 0
    for name in ("header", "block", "footer"):  # in file order: offsets run on from part to part
        data = b""
        for line in tables[name].splitlines()[2:]:  # past the table's head and its |---| line
            match = DUMP_ROW.match(line)
            assert match is not None, line
            assert int(match[1]) == offset + len(data), line
            data += bytes.fromhex(match[2])
        assert data == want[name], name
        offset += len(data)


def test_reader_decodes_the_example(example: Path) -> None:
    info = verify_snapshot(str(example))
    assert (info.cut, info.created, info.namespace, info.namespaces, info.rows) == (CUT, CREATED, None, NAMESPACES, 2)
    with open_snapshot(str(example)) as reader:
        rows = [(ns.decode(), key.decode(), ts, unpack_value(value)) for ns, key, value, ts in reader]
    assert rows == [("users", "u:1", 1767225500000000, {"name": "Alice"}), ("users", "u:2", 1767225550000000, 2)]


def test_documented_limits_are_the_code_s(doc: str) -> None:
    assert snapshot.MAX_HEADER_BYTES == 16 << 20 and "16 MiB (`MAX_HEADER_BYTES`)" in doc
    assert snapshot.BLOCK_BYTES == 64 << 10 and "64 KiB (`BLOCK_BYTES`)" in doc
    assert snapshot.BLOCK_ROWS == 4096 and "4096 rows\n(`BLOCK_ROWS`)" in doc
    assert snapshot.MAX_BLOCK_BYTES == (256 << 20) + (1 << 20)
    assert snapshot.MAGIC == b"KVCSNAP\x00" and snapshot.PART_MAGIC == b"KVCPART\x00"
