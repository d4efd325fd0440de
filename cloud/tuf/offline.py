"""What root key custodians do on their own machine: make root keys, sign a proposed root.

Nothing here talks to the hub; the CLI carries public keys and signatures between the
two, so root private keys never leave the custodian's folder (a removable disk).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key
from tuf.api.metadata import Metadata, Root

from cloud.tuf.errors import RotationError
from cloud.tuf.keys import KeyDir

__all__ = ["describe_root", "generate_root_keys", "key_to_dict", "sign_root_json"]


def key_to_dict(key: Key) -> dict[str, Any]:
    """A public key as the hub's rotation API takes it."""
    return {"keyid": key.keyid, **key.to_dict()}


def generate_root_keys(root_dir: Path, count: int, passphrase: bytes) -> list[Key]:
    """Make ``count`` ed25519 root keys in ``root_dir``, each encrypted with ``passphrase``."""
    if count < 1:
        raise RotationError(f"expected at least 1 root key, got {count}")
    folder = KeyDir(root_dir, passphrase)
    return [folder.create().public_key for _ in range(count)]


def sign_root_json(
    root_json: str | bytes, folders: Iterable[KeyDir], wanted: Iterable[str]
) -> dict[str, str]:
    """Signatures (keyid -> hex) over a proposed root by every local key among ``wanted``."""
    data = root_json.encode() if isinstance(root_json, str) else root_json
    md: Metadata[Any] = Metadata.from_bytes(data)
    if not isinstance(md.signed, Root):
        raise RotationError(f"expected root metadata to sign, got {md.signed.type}")
    payload = md.signed_bytes
    wanted = set(wanted)
    out: dict[str, str] = {}
    for folder in folders:
        for keyid in folder.keyids():
            if keyid in wanted and keyid not in out:
                out[keyid] = folder.signer(keyid).sign(payload).signature
    return out


def describe_root(root_json: str | bytes, previous: Mapping[str, Any] | None = None) -> list[str]:
    """Lines a custodian reads before signing: version, expiry, each role's key ids and threshold."""
    data = root_json.encode() if isinstance(root_json, str) else root_json
    md: Metadata[Any] = Metadata.from_bytes(data)
    root = md.signed
    assert isinstance(root, Root)
    lines = [f"root v{root.version}, expires {root.expires.isoformat()}"]
    for name, role in sorted(root.roles.items()):
        ids = ", ".join(k[:12] for k in role.keyids)
        lines.append(f"  {name:<9} threshold {role.threshold} of [{ids}]")
    director = root.unrecognized_fields.get("x-edgefleet-director", {})
    if isinstance(director, dict):
        ids = ", ".join(str(k)[:12] for k in director.get("keyids", []))
        lines.append(f"  director  threshold {director.get('threshold')} of [{ids}]")
    del previous
    return lines
