"""Redis glob patterns (KEYS, SCAN MATCH, CONFIG GET), matched on the key's bytes.

The syntax is that of Redis's `stringmatchlen`, quirks included: `*` any run of
bytes, `?` one byte, `[abc]` `[^abc]` `[a-z]` (a reversed range `[z-a]` is the same
range; `\\` escapes inside), `\\x` the byte x; an unclosed `[` takes the rest of the
pattern as its set, and a trailing `\\` is a literal backslash.

Every element but `*` matches exactly one byte, so a pattern is a list of fixed-length
segments between stars: the first must match at the start, the last at the end, and
each middle one at its leftmost place after the one before (leftmost is always safe
for fixed-length segments). Each segment is one compiled regular expression without
repetition, so matching costs O(key length * pattern length) at worst — no pattern backtracks
exponentially, however many stars it has.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Final

__all__ = ["compile_glob", "glob_match", "has_wildcards"]

_ALL: Final = frozenset(range(256))
Token = frozenset[int] | None  # the bytes one element matches; None for a star


def has_wildcards(pattern: bytes) -> bool:
    return any(c in pattern for c in b"*?[\\")


def _tokens(pattern: bytes) -> list[Token]:
    """The pattern's elements, parsed as stringmatchlen reads them."""
    tokens: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x2A:  # '*'
            if not tokens or tokens[-1] is not None:
                tokens.append(None)
        elif c == 0x3F:  # '?'
            tokens.append(_ALL)
        elif c == 0x5B:  # '['
            i += 1
            negate = i < n and pattern[i] == 0x5E  # '^'
            if negate:
                i += 1
            members: set[int] = set()
            while True:
                if i < n and pattern[i] == 0x5C and n - i >= 2:  # '\\' escapes the next byte
                    i += 1
                    members.add(pattern[i])
                elif i < n and pattern[i] == 0x5D:  # ']'
                    break
                elif i >= n:  # unclosed: the class ends with the pattern
                    i -= 1
                    break
                elif n - i >= 3 and pattern[i + 1] == 0x2D:  # 'a-z' (also when z is ']')
                    low, high = sorted((pattern[i], pattern[i + 2]))
                    members.update(range(low, high + 1))
                    i += 2
                else:
                    members.add(pattern[i])
                i += 1
            tokens.append(_ALL - members if negate else frozenset(members))
        else:
            if c == 0x5C and n - i >= 2:  # '\\x': x itself
                i += 1
            tokens.append(frozenset((pattern[i],)))
        i += 1
    return tokens


def _class(members: frozenset[int]) -> bytes:
    if members == _ALL:
        return b"."
    if not members:
        return b"(?!)"  # matches nothing
    if len(members) == 1:
        return re.escape(bytes(members))
    runs: list[bytes] = []
    ordered = sorted(members)
    start = prev = ordered[0]
    for c in [*ordered[1:], -1]:
        if c != prev + 1:
            runs.append(b"\\x%02x" % start if start == prev else b"\\x%02x-\\x%02x" % (start, prev))
            start = c
        prev = c
    return b"[" + b"".join(runs) + b"]"


def _segment(tokens: list[frozenset[int]]) -> re.Pattern[bytes]:
    return re.compile(b"".join(map(_class, tokens)), re.DOTALL)


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: bytes) -> Callable[[bytes], bool]:
    """A predicate telling whether a key (bytes) matches `pattern`."""
    tokens = _tokens(pattern)
    segments: list[list[frozenset[int]]] = [[]]
    for token in tokens:
        if token is None:
            segments.append([])
        else:
            segments[-1].append(token)
    if len(segments) == 1:
        whole = _segment(segments[0])
        return lambda key: whole.fullmatch(key) is not None
    first, last = _segment(segments[0]), _segment(segments[-1])
    first_len, last_len = len(segments[0]), len(segments[-1])
    middle = [(_segment(s), len(s)) for s in segments[1:-1] if s]

    def match(key: bytes) -> bool:
        if not key:
            return False  # Redis: no pattern with a star matches the empty string
        if len(key) < first_len + last_len + sum(size for _, size in middle) or first.match(key) is None:
            return False
        end = len(key) - last_len
        if last.fullmatch(key, end) is None:
            return False
        pos = first_len
        for regex, size in middle:
            found = regex.search(key, pos, end)
            if found is None:
                return False
            pos = found.start() + size
        return True

    return match


def glob_match(pattern: bytes, key: bytes) -> bool:
    return compile_glob(pattern)(key)
