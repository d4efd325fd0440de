"""Key custody: encrypted at rest, refused with the wrong passphrase, destroyed when retired."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cloud.tuf.errors import KeyCustodyError, PassphraseError
from cloud.tuf.keys import KeyDir, OnlineKeys, read_or_create_passphrase

PASS = b"correct horse battery"


def test_keys_are_encrypted_at_rest_and_private_to_the_owner(tmp_path: Path) -> None:
    folder = KeyDir(tmp_path / "root", PASS)
    signer = folder.create()
    path = tmp_path / "root" / f"{signer.public_key.keyid}.pem"
    pem = path.read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = folder.signer(signer.public_key.keyid)
    assert again.public_key == signer.public_key
    sig = again.sign(b"payload")
    signer.public_key.verify_signature(sig, b"payload")


def test_a_wrong_passphrase_is_refused(tmp_path: Path) -> None:
    signer = KeyDir(tmp_path, PASS).create()
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        KeyDir(tmp_path, b"not the passphrase").signer(signer.public_key.keyid)


def test_short_passphrases_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PassphraseError, match="at least 8"):
        KeyDir(tmp_path, b"short")


def test_a_key_file_for_another_key_is_refused(tmp_path: Path) -> None:
    folder = KeyDir(tmp_path, PASS)
    a, b = folder.create(), folder.create()
    (tmp_path / f"{a.public_key.keyid}.pem").write_bytes(
        (tmp_path / f"{b.public_key.keyid}.pem").read_bytes()
    )
    with pytest.raises(KeyCustodyError, match=f"expected {a.public_key.keyid}"):
        folder.signer(a.public_key.keyid)


def test_removed_keys_are_gone(tmp_path: Path) -> None:
    folder = KeyDir(tmp_path, PASS)
    signer = folder.create()
    folder.remove(signer.public_key.keyid)
    assert folder.keyids() == []
    with pytest.raises(KeyCustodyError, match="no private key"):
        folder.signer(signer.public_key.keyid)


def test_generated_passphrase_is_reused_and_private(tmp_path: Path) -> None:
    path = tmp_path / "online.passphrase"
    first = read_or_create_passphrase(path)
    assert read_or_create_passphrase(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_online_keys_only_for_online_roles(tmp_path: Path) -> None:
    online = OnlineKeys(tmp_path, PASS)
    key = online.role("timestamp").create().public_key
    assert [s.public_key for s in online.signers("timestamp", [key.keyid, "f" * 64])] == [key]
    with pytest.raises(KeyCustodyError, match="not an online role"):
        online.role("root")
