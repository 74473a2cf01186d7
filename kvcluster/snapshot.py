"""The bytes of a kvcluster snapshot file, and nothing else: writing, assembling, reading.

Grammar (integers little-endian; docs/snapshot-format.md has the field tables, the
limits and a worked example in hex)::

    snapshot := header block* footer(magic)
    header   := magic[8]="KVCSNAP\\0" version:u16 flags:u16 header_len:u32 header_crc:u32
                map[header_len]                                (msgpack: cut, created, scope)
    block    := crc:u32 length:u32 rows:u32 payload[length]     (msgpack: runs of rows)
    footer(m):= footer_crc:u32 rows:u64 blocks:u64 body_bytes:u64 body_crc:u32 m[8]
    part     := magic[8]="KVCPART\\0" version:u16 flags:u16 block* footer("KVCPART\\0")

Every checksum is CRC-32 (`zlib.crc32`). A block's `crc` covers `length`, `rows` and
the payload, so a damaged length fails the check instead of steering the reader; the
footer's `body_crc` covers every byte of every block. A shard writes a *part* of its
rows (`PartWriter`); `assemble` copies the parts' blocks, checked, into one snapshot;
`open_snapshot` streams rows back, checking each block before it yields a row of it.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from itertools import groupby, islice, repeat
from operator import itemgetter
from types import TracebackType
from typing import Any, Final

import msgpack

from kvcluster.errors import InvalidRequest, SnapshotError, StorageError
from kvcluster.failpoints import failpoint
from kvcluster.journal.format import MAGIC as JOURNAL_MAGIC
from kvcluster.journal.format import MAX_VALUE_BYTES
from kvcluster.journal.fs import FileSystem
from kvcluster.keys import MAX_KEY_BYTES, MAX_NAMESPACE_BYTES, encode_namespace
from kvcluster.process import pid_alive

__all__ = [
    "BLOCK_BYTES",
    "BLOCK_ROWS",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_BLOCK_BYTES",
    "MAX_HEADER_BYTES",
    "PART_MAGIC",
    "PartInfo",
    "PartWriter",
    "Row",
    "SnapshotInfo",
    "SnapshotReader",
    "assemble",
    "open_snapshot",
    "verify_snapshot",
    "write_snapshot",
]

Row = tuple[bytes, bytes, bytes, int]  # namespace, key, packed value, timestamp (µs)

MAGIC: Final = b"KVCSNAP\x00"
PART_MAGIC: Final = b"KVCPART\x00"
FORMAT_VERSION: Final = 1

_HEADER: Final = struct.Struct("<8sHHII")  # magic, version, flags, header_len, header_crc
_PREAMBLE: Final = struct.Struct("<8sHH")  # a part's: magic, version, flags
_BLOCK: Final = struct.Struct("<III")  # crc, length, rows
_FOOTER: Final = struct.Struct("<IQQQI8s")  # footer_crc, rows, blocks, body_bytes, body_crc, magic
_CRC: Final = struct.Struct("<I")

MAX_HEADER_BYTES: Final = 16 << 20
BLOCK_BYTES: Final = 64 << 10  # a writer starts a new block past this many key and value bytes
BLOCK_ROWS: Final = 4096  # ... or this many rows
MAX_BLOCK_BYTES: Final = MAX_VALUE_BYTES + (1 << 20)  # one row of the largest value, with room
_IO_CHUNK: Final = 1 << 20  # writes are gathered into chunks of this size

_crc32 = zlib.crc32


@dataclass(frozen=True)
class PartInfo:
    path: str
    rows: int
    blocks: int
    size: int


@dataclass(frozen=True)
class SnapshotInfo:
    path: str
    version: int
    cut: int  # µs: the snapshot holds every write with ts <= cut
    created: int  # µs
    namespace: str | None  # None: the whole cluster
    namespaces: dict[str, dict[str, int]] = field(hash=False)  # name -> max_keys, max_value_bytes
    rows: int
    size: int


def _columns_problem(keys: tuple[Any, ...], values: tuple[Any, ...], tss: tuple[Any, ...]) -> tuple[str | None, int]:
    """What is wrong with these columns of rows (or None), and their key and value bytes.

    C loops only: this runs for every block written and read.
    """
    if set(map(type, keys)) != {bytes} or set(map(type, values)) != {bytes}:
        return "a key or a value is not bytes", 0
    key_lengths = list(map(len, keys))
    if min(key_lengths) < 1 or max(key_lengths) > MAX_KEY_BYTES:
        return f"a key is not 1..{MAX_KEY_BYTES} bytes", 0
    value_lengths = list(map(len, values))
    if min(value_lengths) < 1 or max(value_lengths) > MAX_VALUE_BYTES:
        return f"a value is not 1..{MAX_VALUE_BYTES} bytes of msgpack", 0
    if set(map(type, tss)) != {int} or min(tss) < 0:
        return "a timestamp is not a non-negative int", 0
    return None, sum(key_lengths) + sum(value_lengths)


def _namespace_problem(ns: Any) -> str | None:
    if type(ns) is not bytes or not 0 < len(ns) <= MAX_NAMESPACE_BYTES:
        return f"a namespace is not 1..{MAX_NAMESPACE_BYTES} bytes"
    return None


def _encode_blocks(rows: list[Row]) -> Iterator[tuple[bytes, bytes, int]]:
    """(frame head, payload, rows) of blocks holding `rows` in order; InvalidRequest for a bad row.

    The rows are split evenly into as many blocks as their key and value bytes make
    BLOCK_BYTES (so at most BLOCK_ROWS rows a block when called with that many).
    """
    try:
        if set(map(len, rows)) != {4}:
            raise TypeError
    except TypeError:
        raise InvalidRequest("snapshot rows are (namespace, key, value, ts) tuples") from None
    nss, keys, values, tss = (tuple(map(column, rows)) for column in _COLUMNS)  # zip(*rows) is slower
    single = nss.count(nss[0]) == len(nss)  # the usual case: one namespace throughout
    problem = _namespace_problem(nss[0]) if single else _namespace_column_problem(nss)
    problem2, size = _columns_problem(keys, values, tss)
    if problem or problem2:
        raise InvalidRequest(f"bad snapshot row: {problem or problem2}")
    blocks = min(len(rows), -(-size // BLOCK_BYTES))
    per_block = -(-len(rows) // blocks)
    for start in range(0, len(rows), per_block):
        end = min(start + per_block, len(rows))
        if single:
            runs = [(nss[0], keys[start:end], values[start:end], tss[start:end])]
        else:  # one run per stretch of one namespace
            runs = []
            for ns, group in groupby(range(start, end), nss.__getitem__):
                at = list(group)
                a, b = at[0], at[-1] + 1
                runs.append((ns, keys[a:b], values[a:b], tss[a:b]))
        yield _frame(runs, end - start)


def _encode_space(
    ns: bytes, entries: Mapping[bytes, tuple[bytes, int]], block_rows: int
) -> Iterator[tuple[bytes, bytes, int]]:
    """Blocks of one namespace's {key: (value, ts)}, read in C loops (no tuple a row).

    The entries come from a store, which validated each on the way in; only their sizes
    are measured here. Readers check every row again.
    """
    items = iter(entries.items())
    while chunk := list(islice(items, block_rows)):
        keys, pairs = tuple(map(_KEY, chunk)), tuple(map(_PAIR, chunk))
        values, tss = tuple(map(_KEY, pairs)), tuple(map(_PAIR, pairs))
        size = sum(map(len, keys)) + sum(map(len, values))
        per_block = -(-len(chunk) // min(len(chunk), -(-size // BLOCK_BYTES)))
        for start in range(0, len(chunk), per_block):
            end = min(start + per_block, len(chunk))
            yield _frame([(ns, keys[start:end], values[start:end], tss[start:end])], end - start)


def _frame(
    runs: list[tuple[bytes, tuple[bytes, ...], tuple[bytes, ...], tuple[int, ...]]], rows: int
) -> tuple[bytes, bytes, int]:
    payload = msgpack.packb(runs, use_bin_type=True)
    length_rows = _BLOCK.pack(0, len(payload), rows)[4:]
    return _CRC.pack(_crc32(payload, _crc32(length_rows))) + length_rows, payload, rows


_KEY, _PAIR = itemgetter(0), itemgetter(1)
_COLUMNS: Final = tuple(map(itemgetter, range(4)))


def _namespace_column_problem(nss: tuple[Any, ...]) -> str | None:
    try:
        return next(filter(None, map(_namespace_problem, set(nss))), None)
    except TypeError:  # unhashable: not bytes
        return f"a namespace is not 1..{MAX_NAMESPACE_BYTES} bytes"


class _BodyWriter:
    """Writes frames to a file through `fs`, keeping the counts and checksum the footer holds."""

    def __init__(self, fs: FileSystem, fd: int, path: str) -> None:
        self.fs, self.fd, self.path = fs, fd, path
        self.rows = self.blocks = self.body_bytes = self.body_crc = 0
        self.size = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def raw(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        if self._pending_bytes >= _IO_CHUNK:
            self.flush()

    def frame(self, head: bytes, payload: bytes, rows: int) -> None:
        self.raw(head)
        self.raw(payload)
        self.body_crc = _crc32(payload, _crc32(head, self.body_crc))
        self.body_bytes += len(head) + len(payload)
        self.rows += rows
        self.blocks += 1

    def footer(self, magic: bytes) -> None:
        fields = _FOOTER.pack(0, self.rows, self.blocks, self.body_bytes, self.body_crc, magic)[4:]
        self.raw(_CRC.pack(_crc32(fields)) + fields)
        self.flush()

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self.fs.write_all(self.fd, data)


def _storage_error(what: str, path: str, exc: OSError) -> StorageError:
    return StorageError(f"{what} {path}: {exc.strerror or exc}", path=path)


class PartWriter:
    """Writes one part file: rows buffered into blocks, then a footer at `close()`.

    A context manager: closed on success; on an exception the file is removed. Parts
    are scratch files for `assemble`, which makes the durable file: no fsync here.
    """

    def __init__(self, path: str, *, fs: FileSystem | None = None) -> None:
        self.path = path
        self._fs = fs or FileSystem()
        self._rows: list[Row] = []
        self._info: PartInfo | None = None
        self._abandoned = False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _storage_error("cannot create snapshot part", path, exc) from None
        self._body = _BodyWriter(self._fs, fd, path)
        self._io(self._body.raw, _PREAMBLE.pack(PART_MAGIC, FORMAT_VERSION, 0))

    def add(self, ns: bytes, key: bytes, value: bytes, ts: int) -> None:
        self._check_open()
        self._rows.append((ns, key, value, ts))
        if len(self._rows) >= BLOCK_ROWS:
            self._flush_rows()

    def add_many(self, rows: Iterable[Row]) -> None:
        self._check_open()
        source = iter(rows)
        while chunk := list(islice(source, BLOCK_ROWS - len(self._rows))):
            self._rows += chunk
            if len(self._rows) >= BLOCK_ROWS:
                self._flush_rows()

    def add_space(
        self,
        ns: bytes,
        entries: Mapping[bytes, tuple[bytes, int]],
        *,
        block_rows: int = BLOCK_ROWS,
        after_block: Callable[[], object] | None = None,
    ) -> None:
        """Every entry of one namespace of a store, {key: (packed value, ts)}: the fast path
        for a shard's part. Entries are trusted to be valid (a store checked them).
        Blocks hold at most `block_rows` rows; `after_block` runs after each is written
        (a forked writer yields the CPU there)."""
        if not 0 < block_rows <= BLOCK_ROWS:
            raise ValueError(f"block_rows is 1..{BLOCK_ROWS}")
        self._check_open()
        if problem := _namespace_problem(ns):
            raise InvalidRequest(f"bad snapshot namespace: {problem}")
        self._flush_rows()
        for head, payload, count in _encode_space(ns, entries, block_rows):
            self._io(self._body.frame, head, payload, count)
            if after_block is not None:
                after_block()

    def close(self) -> PartInfo:
        """Write what is buffered and the footer; the part's figures. Again: the same figures."""
        if self._info is None:
            self._check_open()
            self._flush_rows()
            self._io(self._body.footer, PART_MAGIC)
            self._info = PartInfo(self.path, self._body.rows, self._body.blocks, self._body.size)
            self._close_fd()
        return self._info

    def abandon(self) -> None:
        """Close and remove the file (nothing is kept of a part that failed)."""
        self._close_fd()
        self._abandoned = True
        with contextlib.suppress(OSError):
            self._fs.unlink(self.path)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()

    def _check_open(self) -> None:
        if self._info is not None or self._abandoned:
            raise ValueError(f"snapshot part {self.path} is closed")

    def _flush_rows(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            for head, payload, count in _encode_blocks(rows):
                self._io(self._body.frame, head, payload, count)

    def _io(self, call: Callable[..., None], *args: Any) -> None:
        try:
            call(*args)
        except OSError as exc:
            self.abandon()
            raise _storage_error("cannot write snapshot part", self.path, exc) from None

    def _close_fd(self) -> None:
        if self._body.fd >= 0:
            fd, self._body.fd = self._body.fd, -1
            os.close(fd)


def _encode_header(
    cut: int, created: int | None, namespace: str | None, namespaces: Mapping[str, Mapping[str, int]] | None
) -> tuple[bytes, dict[str, Any]]:
    """The header bytes, and the map they hold; InvalidRequest for a bad field."""
    if type(cut) is not int or cut < 0:
        raise InvalidRequest(f"a snapshot's cut is a non-negative int of µs, not {cut!r}")
    created = time.time_ns() // 1000 if created is None else created
    if type(created) is not int or created < 0:
        raise InvalidRequest(f"a snapshot's created time is a non-negative int of µs, not {created!r}")
    if namespace is not None:
        encode_namespace(namespace)
    configs: dict[str, dict[str, int]] = {}
    for name in sorted(namespaces or {}):
        encode_namespace(name)
        config = (namespaces or {})[name]
        limits = {limit: config.get(limit) for limit in _LIMITS}
        if not all(map(_is_natural, limits.values())):
            raise InvalidRequest(f"namespace {name!r}: max_keys and max_value_bytes are non-negative ints")
        configs[name] = {limit: config[limit] for limit in _LIMITS}
    scope = {"cut": cut, "created": created, "namespace": namespace, "namespaces": configs}
    payload = msgpack.packb(scope, use_bin_type=True)
    if len(payload) > MAX_HEADER_BYTES:
        raise InvalidRequest(f"snapshot header of {len(payload)} bytes exceeds {MAX_HEADER_BYTES}")
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(payload), 0)[:16]
    return head + _CRC.pack(_crc32(payload, _crc32(head))) + payload, scope


def _info(path: str, scope: dict[str, Any], rows: int, size: int) -> SnapshotInfo:
    return SnapshotInfo(
        path, FORMAT_VERSION, scope["cut"], scope["created"], scope["namespace"], scope["namespaces"], rows, size
    )


_TEMP_SUFFIX = re.compile(r"\.(\d+)\.[0-9a-f]{8}\.tmp")  # what _temp_path adds, its writer's pid first


def _temp_path(out_path: str) -> str:
    return f"{out_path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"


def _clear_stale_temps(out_path: str, fs: FileSystem) -> None:
    """Remove the temp files that writers of this same snapshot path left when they
    were killed (the pid in the name is gone): otherwise each crash leaves one behind."""
    directory, name = os.path.split(os.path.abspath(out_path))
    try:
        entries = os.listdir(directory)
    except OSError:
        return  # creating the temp file will say what is wrong
    for entry in entries:
        found = _TEMP_SUFFIX.fullmatch(entry[len(name) :]) if entry.startswith(name) else None
        if found is not None and not pid_alive(int(found.group(1))):
            with contextlib.suppress(OSError):
                fs.unlink(os.path.join(directory, entry))


def _write_atomically(
    out_path: str, header: tuple[bytes, dict[str, Any]], fill: Callable[[_BodyWriter], None], fs: FileSystem
) -> SnapshotInfo:
    """Write header, body (by `fill`) and footer to a temp file, fsync it, rename it over
    out_path, fsync the directory. On any error the temp file is gone, out_path untouched."""
    directory = os.path.dirname(os.path.abspath(out_path))
    _clear_stale_temps(out_path, fs)
    tmp = _temp_path(out_path)
    try:
        fd = fs.create(tmp)
    except OSError as exc:
        raise _storage_error("cannot create snapshot", tmp, exc) from None
    try:
        try:
            body = _BodyWriter(fs, fd, tmp)
            body.raw(header[0])
            fill(body)
            body.footer(MAGIC)
            fs.fsync(fd)
            failpoint("snapshot.synced")
        finally:
            os.close(fd)
        fs.rename(tmp, out_path)
        failpoint("snapshot.renamed")
    except BaseException as exc:
        with contextlib.suppress(OSError):
            fs.unlink(tmp)
        if isinstance(exc, OSError):
            raise _storage_error("cannot write snapshot", out_path, exc) from None
        raise
    try:
        fs.fsync_dir(directory)
    except OSError as exc:
        raise _storage_error("cannot make durable the snapshot", out_path, exc) from None
    return _info(out_path, header[1], body.rows, body.size)


def write_snapshot(
    out_path: str,
    rows: Iterable[Row],
    *,
    cut: int,
    namespace: str | None = None,
    namespaces: Mapping[str, Mapping[str, int]] | None = None,
    created: int | None = None,
    fs: FileSystem | None = None,
) -> SnapshotInfo:
    """Write `rows` as a snapshot at out_path, atomically (temp file, fsync, rename)."""
    header = _encode_header(cut, created, namespace, namespaces)

    def fill(body: _BodyWriter) -> None:
        source = iter(rows)
        while chunk := list(islice(source, BLOCK_ROWS)):
            for head, payload, count in _encode_blocks(chunk):
                body.frame(head, payload, count)

    return _write_atomically(out_path, header, fill, fs or FileSystem())


def assemble(
    out_path: str,
    parts: Iterable[str],
    *,
    cut: int,
    namespace: str | None = None,
    namespaces: Mapping[str, Mapping[str, int]] | None = None,
    created: int | None = None,
    fs: FileSystem | None = None,
    after_block: Callable[[], object] | None = None,
) -> SnapshotInfo:
    """One snapshot of the parts' blocks, each block checked as it is copied; atomic like
    `write_snapshot`. A damaged part raises SnapshotError naming it. Parts are kept.
    `after_block` runs after each block is copied (the coordinator yields the CPU there)."""
    header = _encode_header(cut, created, namespace, namespaces)

    def fill(body: _BodyWriter) -> None:
        for part in parts:
            with _Source(part, PART_MAGIC) as source:
                for _offset, head, payload, count in source.frames():
                    body.frame(head, payload, count)
                    if after_block is not None:
                        after_block()

    return _write_atomically(out_path, header, fill, fs or FileSystem())


class _Source:
    """A snapshot or part file open for reading: its envelope checked, its frames on demand."""

    def __init__(self, path: str, magic: bytes) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SnapshotError(f"{path}: cannot read: {exc.strerror or exc}", path=path) from None
        try:
            self.size = os.fstat(self.fd).st_size
            self.scope: dict[str, Any] = {}
            self.body_start = self._read_header() if magic == MAGIC else self._read_preamble()
            self.rows, self.blocks, self.body_crc = self._read_footer(magic)
        except BaseException:
            self.close()
            raise

    def error(self, offset: int | None, what: str) -> SnapshotError:
        where = f" at byte {offset}" if offset is not None else ""
        return SnapshotError(f"{self.path}: {what}{where}", path=self.path, offset=offset)

    def read(self, offset: int, size: int) -> bytes:
        """Exactly `size` bytes at `offset` (the caller has checked they lie in the file)."""
        try:
            data = os.pread(self.fd, size, offset)
            while len(data) < size:
                more = os.pread(self.fd, size - len(data), offset + len(data))
                if not more:
                    raise self.error(offset + len(data), "truncated (the file shrank while read)")
                data += more
        except OSError as exc:
            raise self.error(offset, f"cannot read: {exc.strerror or exc}") from None
        return data

    def _check_magic(self, data: bytes, magic: bytes) -> None:
        if not data:
            raise self.error(None, f"not a kvcluster {_KIND[magic]}: the file is empty")
        if data[:8] != magic[: len(data)]:
            other = _KIND.get(data[:8])
            what = f"a kvcluster {other}" if other else f"it starts with {data[:8]!r}"
            raise self.error(0, f"not a kvcluster {_KIND[magic]} ({what})")

    def _check_version(self, data: bytes, minimum: int) -> tuple[int, int]:
        if len(data) < minimum:
            raise self.error(len(data), f"truncated: the file is {len(data)} bytes")
        version, flags = struct.unpack_from("<HH", data, 8)
        if version != FORMAT_VERSION:
            age = "newer than" if version > FORMAT_VERSION else "unknown to"
            raise self.error(8, f"format version {version} is {age} this kvcluster (reads {FORMAT_VERSION})")
        return version, flags

    def _read_preamble(self) -> int:
        data = self.read(0, min(self.size, _PREAMBLE.size))
        self._check_magic(data, PART_MAGIC)
        _version, flags = self._check_version(data, _PREAMBLE.size)
        if flags:
            raise self.error(10, f"unknown flags {flags:#06x}")
        return _PREAMBLE.size

    def _read_header(self) -> int:
        data = self.read(0, min(self.size, _HEADER.size))
        self._check_magic(data, MAGIC)
        _version, flags = self._check_version(data, _HEADER.size)
        length: int
        crc: int
        _magic, _version, _flags, length, crc = _HEADER.unpack(data)
        if length > MAX_HEADER_BYTES:
            raise self.error(12, f"header length {length} exceeds the limit of {MAX_HEADER_BYTES}")
        end = _HEADER.size + length
        if end + _FOOTER.size > self.size:
            raise self.error(self.size, f"truncated: header length {length} runs past the footer")
        payload = self.read(_HEADER.size, length)
        if _crc32(payload, _crc32(data[:16])) != crc:
            raise self.error(0, "header checksum mismatch")
        if flags:
            raise self.error(10, f"unknown flags {flags:#06x}")
        self.scope = _decode_scope(payload, self.error)
        return end

    def _read_footer(self, magic: bytes) -> tuple[int, int, int]:
        at = self.size - _FOOTER.size
        if at < self.body_start:
            raise self.error(self.size, "truncated: no room for the footer")
        data = self.read(at, _FOOTER.size)
        crc, rows, blocks, body_bytes, body_crc, end_magic = _FOOTER.unpack(data)
        if end_magic != magic:
            raise self.error(at + 32, "truncated or damaged: the file does not end with a footer")
        if _crc32(data[4:]) != crc:
            raise self.error(at, "footer checksum mismatch")
        if body_bytes != at - self.body_start:
            raise self.error(at, f"footer says the body is {body_bytes} bytes, the file holds {at - self.body_start}")
        return rows, blocks, body_crc

    def frames(self) -> Iterator[tuple[int, bytes, bytes, int]]:
        """(offset, head, payload, rows) of every block, each checked, then the totals."""
        position, end = self.body_start, self.size - _FOOTER.size
        rows = blocks = body_crc = 0
        while position < end:
            if end - position < _BLOCK.size:
                raise self.error(position, "truncated block header")
            head = self.read(position, _BLOCK.size)
            crc, length, count = _BLOCK.unpack(head)
            if not 0 < length <= min(MAX_BLOCK_BYTES, end - position - _BLOCK.size) or count < 1:
                raise self.error(position, f"bad block length {length} (or damaged block header)")
            payload = self.read(position + _BLOCK.size, length)
            if _crc32(payload, _crc32(head[4:])) != crc:
                raise self.error(position, "block checksum mismatch")
            yield position, head, payload, count
            body_crc = _crc32(payload, _crc32(head, body_crc))
            rows += count
            blocks += 1
            position += _BLOCK.size + length
        if (rows, blocks) != (self.rows, self.blocks):
            raise self.error(
                end, f"footer says {self.rows} rows in {self.blocks} blocks; the body has {rows} in {blocks}"
            )
        if body_crc != self.body_crc:
            raise self.error(end, "body checksum mismatch")

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_KIND: Final = {MAGIC: "snapshot", PART_MAGIC: "snapshot part", JOURNAL_MAGIC: "journal"}


def _decode_scope(payload: bytes, error: Callable[[int | None, str], SnapshotError]) -> dict[str, Any]:
    """The header map, every field checked; keys this version does not know are ignored."""
    try:
        scope = msgpack.unpackb(payload, raw=False, max_bin_len=0, max_ext_len=0)
    except (ValueError, TypeError) as exc:
        raise error(_HEADER.size, f"header does not decode: {exc}") from None
    if type(scope) is not dict:
        raise error(_HEADER.size, "header is not a map")
    namespace = scope.get("namespace")
    configs = scope.get("namespaces")
    if not (_is_natural(scope.get("cut")) and _is_natural(scope.get("created"))):
        raise error(_HEADER.size, "header: 'cut' or 'created' is missing or not a non-negative int")
    if not (namespace is None or _is_name(namespace)) or type(configs) is not dict:
        raise error(_HEADER.size, "header: 'namespace' or 'namespaces' is missing or malformed")
    limits: dict[str, dict[str, int]] = {}
    for name, config in configs.items():
        if not _is_name(name) or type(config) is not dict:
            raise error(_HEADER.size, f"header: namespace {name!r} is malformed")
        if not all(_is_natural(config.get(limit)) for limit in _LIMITS):
            raise error(_HEADER.size, f"header: namespace {name!r} has malformed limits")
        limits[name] = {limit: config[limit] for limit in _LIMITS}
    return {"cut": scope["cut"], "created": scope["created"], "namespace": namespace, "namespaces": limits}


_LIMITS: Final = ("max_keys", "max_value_bytes")


def _is_natural(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_name(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_NAMESPACE_BYTES


class SnapshotReader:
    """A snapshot whose header and footer are checked; iterate it for its rows.

    Every block is checked (checksum, framing, each row's fields) before any row of it
    is yielded; the totals and the body checksum are checked after the last block.
    """

    def __init__(self, path: str) -> None:
        self._source = _Source(path, MAGIC)
        self.info = _info(path, self._source.scope, self._source.rows, self._source.size)
        self._scope_ns = None if self.info.namespace is None else self.info.namespace.encode()

    def __iter__(self) -> Iterator[Row]:
        for runs in self._blocks():
            for ns, keys, values, tss in runs:
                yield from zip(repeat(ns), keys, values, tss)

    def _blocks(self) -> Iterator[tuple[tuple[bytes, tuple[bytes, ...], tuple[bytes, ...], tuple[int, ...]], ...]]:
        source = self._source
        if source.fd < 0:
            raise ValueError(f"snapshot {self.info.path} is closed")
        for offset, _head, payload, count in source.frames():
            n = len(payload)
            runs: Any
            try:
                runs = msgpack.unpackb(
                    payload, use_list=False, raw=False, max_bin_len=n, max_str_len=n, max_array_len=n, max_map_len=0
                )
            except (ValueError, TypeError) as exc:
                raise source.error(offset, f"block does not decode: {exc}") from None
            if type(runs) is not tuple or not runs:
                raise source.error(offset, "malformed block: not a list of runs")
            total = 0
            for run in runs:
                if type(run) is not tuple or len(run) != 4 or not all(type(c) is tuple for c in run[1:]):
                    raise source.error(offset, "malformed block: a run is not (namespace, keys, values, ts)")
                ns, keys, values, tss = run
                size = len(keys)
                problem = _namespace_problem(ns) or (
                    "run columns differ in length" if not size or len(values) != size or len(tss) != size else None
                )
                if not problem and self._scope_ns is not None and ns != self._scope_ns:
                    problem = f"a row of namespace {ns!r} in a snapshot of {self.info.namespace!r}"
                problem = problem or _columns_problem(keys, values, tss)[0]
                if problem:
                    raise source.error(offset, f"malformed row: {problem}")
                total += size
            if total != count:
                raise source.error(offset, f"block holds {total} rows, its header says {count}")
            yield runs

    def count_rows(self) -> int:
        """One validating pass over every block; the number of rows."""
        rows = 0
        for runs in self._blocks():
            rows += sum(len(run[1]) for run in runs)
        return rows

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_snapshot(path: str) -> SnapshotReader:
    """Open a snapshot, checking its header and footer now (SnapshotError if either is bad)."""
    return SnapshotReader(path)


def verify_snapshot(path: str) -> SnapshotInfo:
    """Check every byte of a snapshot; its figures, rows counted. SnapshotError names the damage."""
    with open_snapshot(path) as reader:
        return replace(reader.info, rows=reader.count_rows())
