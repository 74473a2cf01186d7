"""docs/wire-protocol.md's worked example and routing vectors are what the code produces."""

from __future__ import annotations

import re
from pathlib import Path

from kvcluster.codec import Op, decode_request, encode_error, encode_reply, encode_request
from kvcluster.errors import KeyNotFound
from kvcluster.router.jump import jump_hash, key_digest
from kvcluster.values import pack_value

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-protocol.md"


def hex_block(name: str) -> bytes:
    match = re.search(rf"<!-- hex:{name} -->\n```text\n(.*?)\n```", DOC.read_text(), re.DOTALL)
    assert match, name
    return bytes.fromhex(match.group(1).replace(" ", "").replace("\n", ""))


def test_the_set_request_and_its_reply() -> None:
    request = encode_request(7, 1, Op.SET, b"users", b"u:1", pack_value({"name": "Alice"}), 1)
    assert hex_block("set-request") == request
    decoded = decode_request(request)
    assert (decoded.seq, decoded.epoch, decoded.op) == (7, 1, Op.SET)
    assert hex_block("set-reply") == encode_reply(7, 1767225600000000)
    assert hex_block("error-reply") == encode_error(9, KeyNotFound("key 'u:2' does not exist"))


def test_the_routing_vectors() -> None:
    assert jump_hash(256, 1024) == 520
    assert jump_hash(10863919174838991, 11) == 6
    assert jump_hash(2016238256797177309, 11) == 3
    digest = key_digest(b"users", b"u:1")
    assert digest == 0xF4949983D6E05237
    assert [jump_hash(digest, n) for n in (1, 2, 3, 4, 8)] == [0, 1, 2, 2, 5]
