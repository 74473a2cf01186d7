"""CURVE keys for the router: who may talk to a cluster from another host.

A router that listens beyond loopback authenticates every client with ZeroMQ's CURVE
(elliptic-curve encryption and authentication, in pyzmq's wheel): the cluster has a
key pair of its own, and a client gets in only if its public key is in the cluster's
allowlist. Keys are ZeroMQ certificate files (`NAME.key` holds the public key,
`NAME.key_secret` both), as `zmq.auth` writes and reads them:

    DATA/keys/server.key          the cluster's public key: give it to clients
    DATA/keys/server.key_secret   its secret key (0600)
    DATA/keys/allowed/*.key       the public keys of the clients let in

`kvcluster keygen NAME --allow DATA` makes a client's pair and lets it in; the router
reads the allowlist again whenever the folder changes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import zmq.auth

from kvcluster.errors import InvalidRequest

__all__ = ["SERVER_NAME", "ClientKeys", "allow", "allowed_dir", "generate", "keys_dir", "server_keys"]

SERVER_NAME: Final = "server"


def keys_dir(data_dir: str) -> Path:
    return Path(data_dir) / "keys"


def allowed_dir(data_dir: str) -> Path:
    return keys_dir(data_dir) / "allowed"


def generate(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """A new key pair in `directory` (made 0700): (public file, secret file, 0600)."""
    if not name or "/" in name or name.startswith("."):
        raise InvalidRequest(f"a key name is a plain file name, not {name!r}")
    folder = Path(directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (folder / f"{name}.key_secret").exists():
        raise InvalidRequest(f"{folder / name}.key_secret exists: keys are never overwritten")
    old_umask = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old_umask)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def server_keys(data_dir: str) -> tuple[bytes, bytes]:
    """The cluster's (public, secret) key, made on first use; the allowlist folder too."""
    folder = keys_dir(data_dir)
    if not (folder / f"{SERVER_NAME}.key_secret").exists():
        generate(folder, SERVER_NAME)
    allowed_dir(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    public, secret = zmq.auth.load_certificate(folder / f"{SERVER_NAME}.key_secret")
    if secret is None:
        raise InvalidRequest(f"{folder / SERVER_NAME}.key_secret holds no secret key")
    return public, secret


def allow(data_dir: str, public_file: str | os.PathLike[str]) -> Path:
    """Let the client whose public key is in `public_file` into the cluster at `data_dir`."""
    source = Path(public_file)
    if source.suffix != ".key":
        raise InvalidRequest(f"give the public key file (NAME.key), not {source.name}")
    try:
        zmq.auth.load_certificate(source)  # a certificate, or refuse it now
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read {source}: {exc}") from None
    server_keys(data_dir)
    target = allowed_dir(data_dir) / source.name
    shutil.copyfile(source, target)
    return target


@dataclass(frozen=True)
class ClientKeys:
    """A client's CURVE keys for one cluster: its own pair and the cluster's public key."""

    public: bytes
    secret: bytes
    server: bytes
    paths: tuple[str, str]  # (the client's secret file, the server's public file): to pickle a proxy

    @classmethod
    def load(cls, key: str | os.PathLike[str], server_key: str | os.PathLike[str]) -> ClientKeys:
        try:
            public, secret = zmq.auth.load_certificate(key)
            server, _none = zmq.auth.load_certificate(server_key)
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"cannot read CURVE keys: {exc}") from None
        if secret is None:
            raise InvalidRequest(f"{key} holds no secret key (give the NAME.key_secret file)")
        return cls(public, secret, server, (os.fspath(key), os.fspath(server_key)))

    def apply(self, socket: zmq.Socket[object]) -> None:
        """Make `socket` a CURVE client of the cluster (before it connects)."""
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret
        socket.curve_serverkey = self.server
