"""Key custody: ed25519 keys in PKCS#8 files encrypted with a passphrase (PBES2: PBKDF2 and AES-256).

    {keys_dir}/online/<role>/<keyid>.pem   online keys: targets, snapshot, timestamp, director
    {keys_dir}/online.passphrase           their passphrase, unless EDGEFLEET_TUF_ONLINE_PASSPHRASE is set
    {keys_dir}/root/<keyid>.pem            a development root key (auto-init only; see docs/security.md)
    {keys_dir}/root.passphrase

Root keys proper live wherever their custodians keep them (``fleet keys init --root-dir``
on a removable disk): a :class:`KeyDir` is any folder of key files sharing one passphrase.
Files are written 0600 through a temporary file and a rename; the private key never
leaves this module unencrypted except inside a signer object.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
)
from securesystemslib.signer import CryptoSigner, SSlibKey

from cloud.tuf.errors import KeyCustodyError, PassphraseError
from model_tools.atomic import atomic_write

__all__ = ["ONLINE_ROLES", "KeyDir", "OnlineKeys", "generate_signer", "read_or_create_passphrase"]

# Roles whose keys the hub holds and uses unattended. "director" signs desired states.
ONLINE_ROLES = ("targets", "snapshot", "timestamp", "director")
MIN_PASSPHRASE = 8


def generate_signer() -> CryptoSigner:
    private = Ed25519PrivateKey.generate()
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key(), scheme="ed25519"))


def _write_private(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=0o600, folder_mode=0o700)


def read_or_create_passphrase(path: Path) -> bytes:
    """The passphrase in ``path``; a new random one (mode 0600) when the file does not exist."""
    try:
        value = path.read_bytes().strip()
    except FileNotFoundError:
        value = secrets.token_urlsafe(32).encode()
        _write_private(path, value + b"\n")
        return value
    except OSError as e:
        raise KeyCustodyError(f"cannot read passphrase file {path}: {e.strerror}") from e
    if len(value) < MIN_PASSPHRASE:
        raise PassphraseError(
            f"passphrase in {path} is {len(value)} bytes: expected at least {MIN_PASSPHRASE}"
        )
    return value


class KeyDir:
    """A folder of encrypted private keys, ``<keyid>.pem``, that share one passphrase."""

    def __init__(self, path: Path, passphrase: bytes) -> None:
        if len(passphrase) < MIN_PASSPHRASE:
            raise PassphraseError(
                f"passphrase is {len(passphrase)} bytes: expected at least {MIN_PASSPHRASE}"
            )
        self.path = path
        self._passphrase = passphrase

    def _file(self, keyid: str) -> Path:
        if not keyid.isalnum():
            raise KeyCustodyError(f"invalid key id {keyid!r}: expected hex digits")
        return self.path / f"{keyid}.pem"

    def create(self) -> CryptoSigner:
        """Generate a key, store it encrypted, and return its signer."""
        signer = generate_signer()
        self.write(signer)
        return signer

    def write(self, signer: CryptoSigner) -> None:
        private = load_pem_private_key(signer.private_bytes, None)
        pem = private.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(self._passphrase)
        )
        _write_private(self._file(signer.public_key.keyid), pem)

    def keyids(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.stem for p in self.path.glob("*.pem"))

    def has(self, keyid: str) -> bool:
        return self._file(keyid).is_file()

    def signer(self, keyid: str) -> CryptoSigner:
        path = self._file(keyid)
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise KeyCustodyError(f"no private key for key id {keyid} in {self.path}") from None
        except OSError as e:
            raise KeyCustodyError(f"cannot read key file {path}: {e.strerror}") from e
        try:
            private = load_pem_private_key(pem, self._passphrase)
        except (ValueError, TypeError) as e:
            raise PassphraseError(f"cannot decrypt key file {path}: wrong passphrase or damaged file") from e
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyCustodyError(
                f"key file {path} holds a {type(private).__name__}: expected an ed25519 key"
            )
        public = SSlibKey.from_crypto(private.public_key(), scheme="ed25519")
        if public.keyid != keyid:
            raise KeyCustodyError(f"key file {path} holds key {public.keyid}: expected {keyid}")
        return CryptoSigner(private, public)

    def signers(self) -> list[CryptoSigner]:
        return [self.signer(k) for k in self.keyids()]

    def remove(self, keyid: str) -> None:
        """Delete a retired key (a retired root key could still sign for devices that never updated)."""
        path = self._file(keyid)
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            with path.open("r+b") as f:
                f.write(secrets.token_bytes(size))
                f.flush()
                os.fsync(f.fileno())
            path.unlink()


class OnlineKeys:
    """The hub's online keys, one folder per role."""

    def __init__(self, keys_dir: Path, passphrase: bytes) -> None:
        self.keys_dir = keys_dir
        self._passphrase = passphrase

    def role(self, role: str) -> KeyDir:
        if role not in ONLINE_ROLES:
            raise KeyCustodyError(
                f"{role!r} is not an online role: expected one of {', '.join(ONLINE_ROLES)}"
            )
        return KeyDir(self.keys_dir / "online" / role, self._passphrase)

    def signers(self, role: str, keyids: list[str]) -> list[CryptoSigner]:
        """Signers for those of ``keyids`` this hub holds (a threshold may span several hubs' keys)."""
        folder = self.role(role)
        return [folder.signer(k) for k in keyids if folder.has(k)]
