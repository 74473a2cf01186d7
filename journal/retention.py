"""Retention: which archives to delete, oldest first, so the kept history stays unbroken."""

from __future__ import annotations

from kvcluster.config import Retention
from kvcluster.journal.archive import ArchiveFile, list_archives
from kvcluster.journal.fs import FileSystem
from kvcluster.journal.writer import storage_error

__all__ = ["apply_retention", "expired_archives"]


def expired_archives(archives: list[ArchiveFile], policy: Retention, now_us: int) -> list[ArchiveFile]:
    """The oldest archives to delete so that what remains meets every limit of `policy`.

    `archives` is sorted oldest first. Only a prefix is ever chosen: deleting from the
    middle would leave a gap that point-in-time recovery could not replay across.
    """
    keep_from = 0
    if policy.max_archives is not None:
        keep_from = max(keep_from, len(archives) - policy.max_archives)
    if policy.max_age is not None:
        oldest_allowed = now_us - int(policy.max_age * 1_000_000)
        while keep_from < len(archives) and archives[keep_from].cut < oldest_allowed:
            keep_from += 1
    if policy.max_bytes is not None:
        total = sum(a.size for a in archives[keep_from:])
        while keep_from < len(archives) and total > policy.max_bytes:
            total -= archives[keep_from].size
            keep_from += 1
    return archives[:keep_from]


def apply_retention(fs: FileSystem, directory: str, policy: Retention, now_us: int) -> list[ArchiveFile]:
    """Delete the archives `policy` no longer keeps; returns what was deleted."""
    doomed = expired_archives(list_archives(directory), policy, now_us)
    for archive in doomed:
        try:
            fs.unlink(archive.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise storage_error(exc, "deleting expired archive", archive.path) from exc
    if doomed:
        try:
            fs.fsync_dir(directory)
        except OSError as exc:
            raise storage_error(exc, "syncing the directory", directory) from exc
    return doomed
