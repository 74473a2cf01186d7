"""A counter that moves in every child right after fork().

A client remembers the generation its sockets were made in; on a mismatch it is in
a forked child and builds new ones. ZeroMQ contexts do not survive fork(), and the
parent's sockets must be neither used nor closed by the child (pyzmq's close is a
no-op in a child, so dropping them is safe).
"""

from __future__ import annotations

import os

__all__ = ["fork_generation"]

_generation = [0]


def _forked() -> None:
    _generation[0] += 1


os.register_at_fork(after_in_child=_forked)


def fork_generation() -> int:
    return _generation[0]
