"""Redis glob patterns: fixed cases, and thousands of random ones checked against a real
redis-server's KEYS (quirks included: unclosed classes, reversed ranges, escapes)."""

from __future__ import annotations

import random
import time

import pytest
import redis

from kvcluster.resp.glob import glob_match, has_wildcards


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        (b"*", b"anything", True),
        (b"h?llo", b"hello", True),
        (b"h?llo", b"hllo", False),
        (b"h*llo", b"heeeello", True),
        (b"h[ae]llo", b"hallo", True),
        (b"h[ae]llo", b"hillo", False),
        (b"h[^e]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h[b-a]llo", b"hbllo", True),  # a reversed range is the same range
        (b"h\\*llo", b"h*llo", True),
        (b"h\\*llo", b"hello", False),
        (b"[a-]", b"]", True),  # 'a-]' is the range from ']' to 'a'
        (b"a[", b"ab", False),
        (b"a[b", b"ab", True),  # an unclosed class takes the rest of the pattern
        (b"a\\", b"a\\", True),  # a trailing backslash is itself
        (b"[]", b"]", False),
        (b"*a*a*a*a*a*a*a*a*a*a*b", b"a" * 1000, False),  # no exponential backtracking
        (b"user:*:name", "user:é:name".encode(), True),
        (b"?", "é".encode(), False),  # one byte, not one character
        (b"*", b"", False),
    ],
)
def test_patterns(pattern: bytes, key: bytes, matches: bool) -> None:
    assert glob_match(pattern, key) is matches


def test_a_pathological_pattern_is_fast() -> None:
    started = time.perf_counter()
    assert not glob_match(b"*a" * 500 + b"b", b"a" * 1024)
    assert time.perf_counter() - started < 1.0


def test_wildcards_are_recognised() -> None:
    assert not has_wildcards(b"plain:key")
    assert all(has_wildcards(p) for p in (b"a*", b"a?", b"[a]", b"a\\b"))


def test_random_patterns_match_what_redis_server_matches(redis_server: redis.Redis) -> None:
    keys = [b"a", b"ab", b"abc", b"b", b"a]", b"a-", b"\\", b"a\\b", b"[", b"x*y", b"^", b"a^b", b"aaab", b"]", b"-"]
    redis_server.flushall()
    redis_server.mset(dict.fromkeys(keys, b"1"))
    draw = random.Random(8)
    alphabet = b"ab*?[]^-\\x"
    patterns = [bytes(draw.choice(alphabet) for _ in range(draw.randint(1, 7))) for _ in range(1500)]
    pipe = redis_server.pipeline(transaction=False)
    for pattern in patterns:
        pipe.keys(pattern)
    answers = pipe.execute()
    wrong = [
        (pattern, sorted(want), sorted(k for k in keys if glob_match(pattern, k)))
        for pattern, want in zip(patterns, answers, strict=True)
        if set(want) != {k for k in keys if glob_match(pattern, k)}
    ]
    assert not wrong, wrong[:10]
