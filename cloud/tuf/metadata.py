"""Building and signing TUF metadata with python-tuf's Metadata API. Pure: no database, no files.

The director's keys ride in root metadata as a custom field::

    "x-edgefleet-director": {"keyids": ["..."], "threshold": 1}

with the keys themselves in root's ``keys``. A device therefore learns a new director key
the same way it learns any other key: from a root version signed by a threshold of the
previous root's keys. A stolen online key cannot swap the director.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import (
    SPECIFICATION_VERSION,
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

__all__ = [
    "DIRECTOR_FIELD",
    "SPEC_VERSION",
    "TargetSpec",
    "build_root",
    "build_snapshot",
    "build_targets",
    "build_timestamp",
    "director_role",
    "gc_keys",
    "meta_file",
    "serialize",
    "set_director",
    "sign",
]

SPEC_VERSION = ".".join(SPECIFICATION_VERSION)
DIRECTOR_FIELD = "x-edgefleet-director"
T = TypeVar("T", Root, Timestamp, Snapshot, Targets)


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One target: where it is, what its bytes are, and what it is (kind, name, version, hardware)."""

    path: str
    sha256: str
    length: int
    custom: Mapping[str, Any]

    def target_file(self) -> TargetFile:
        return TargetFile(self.length, {"sha256": self.sha256}, self.path, {"custom": dict(self.custom)})


def serialize(md: Metadata[Any]) -> bytes:
    return md.to_bytes(JSONSerializer(compact=True))


def sign(md: Metadata[T], signers: Iterable[Signer]) -> Metadata[T]:
    """Replace ``md``'s signatures with one from each signer."""
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)
    return md


def meta_file(version: int, data: bytes) -> MetaFile:
    """A MetaFile that pins version, length and sha256, so a swapped file is caught (mix-and-match)."""
    return MetaFile(version=version, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()})


def build_root(
    *,
    version: int,
    expires: datetime,
    role_keys: Mapping[str, tuple[list[Key], int]],
    director: tuple[list[Key], int],
) -> Root:
    """A root naming ``(keys, threshold)`` for each top-level role and for the director."""
    root = Root(version=version, spec_version=SPEC_VERSION, expires=expires, consistent_snapshot=True)
    for role, (keys, threshold) in role_keys.items():
        root.roles[role] = Role([], threshold)
        for key in keys:
            root.add_key(key, role)
    set_director(root, *director)
    return root


def set_director(root: Root, keys: list[Key], threshold: int) -> None:
    for key in keys:
        root.keys[key.keyid] = key
    root.unrecognized_fields[DIRECTOR_FIELD] = {"keyids": [k.keyid for k in keys], "threshold": threshold}
    gc_keys(root)


def director_role(root: Root) -> tuple[list[str], int]:
    """The director's key ids and threshold as a root names them; ([], 1) when it names none."""
    field = root.unrecognized_fields.get(DIRECTOR_FIELD)
    if not isinstance(field, dict):
        return [], 1
    keyids = field.get("keyids")
    threshold = field.get("threshold")
    if not isinstance(keyids, list) or not isinstance(threshold, int):
        return [], 1
    return [k for k in keyids if isinstance(k, str)], threshold


def gc_keys(root: Root) -> None:
    """Drop keys no role (and not the director) uses any more."""
    used = {k for role in root.roles.values() for k in role.keyids} | set(director_role(root)[0])
    for keyid in list(root.keys):
        if keyid not in used:
            del root.keys[keyid]


def build_targets(version: int, expires: datetime, specs: Iterable[TargetSpec]) -> Targets:
    return Targets(
        version=version,
        spec_version=SPEC_VERSION,
        expires=expires,
        targets={s.path: s.target_file() for s in specs},
    )


def build_snapshot(version: int, expires: datetime, targets_version: int, targets_data: bytes) -> Snapshot:
    return Snapshot(
        version=version,
        spec_version=SPEC_VERSION,
        expires=expires,
        meta={"targets.json": meta_file(targets_version, targets_data)},
    )


def build_timestamp(
    version: int, expires: datetime, snapshot_version: int, snapshot_data: bytes
) -> Timestamp:
    return Timestamp(
        version=version,
        spec_version=SPEC_VERSION,
        expires=expires,
        snapshot_meta=meta_file(snapshot_version, snapshot_data),
    )
