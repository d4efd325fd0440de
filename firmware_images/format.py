"""The firmware bundle format: one file, a manifest and a payload. Standard library only.

    b"EFFW"  u8 format (1)  u8 0  u32 big-endian manifest length  manifest  payload

The manifest is canonical JSON (sorted keys, no spaces). A *full* bundle's payload is the
image itself; a *delta* bundle's payload is a binary patch that turns the base image
(``base_payload_sha256``) into the target image (``payload_sha256``). Either way the
manifest pins the image the device ends up with, so a delta cannot produce anything a
full bundle of the same version would not.

A bundle is signed by being a TUF target: its length and sha256 sit in signed targets
metadata, and the manifest fields are repeated in the target's custom field, where the
device compares them with the manifest it reads (:func:`check_matches_custom`). This
module is imported by the device agent, so it needs nothing outside the standard library.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_MANIFEST_BYTES",
    "BundleError",
    "BundleKind",
    "DeltaAlgorithm",
    "Manifest",
    "check_id",
    "check_matches_custom",
    "check_version",
    "compare_versions",
    "encode_bundle_header",
    "iter_payload",
    "read_manifest",
    "read_payload",
    "sha256_bytes",
    "write_bundle",
]

MAGIC = b"EFFW"
FORMAT_VERSION = 1
# A manifest is a few hundred bytes; the cap stops a hostile file from making the reader allocate.
MAX_MANIFEST_BYTES = 16 * 1024
_HEADER = struct.Struct(">4sBBI")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION_RE = re.compile(r"^(\d{1,9})(\.\d{1,9}){0,3}([-+][A-Za-z0-9.]{1,32})?$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1024 * 1024


class BundleError(ValueError):
    """A file that is not a well-formed bundle, or a manifest that breaks the rules."""


class BundleKind(enum.StrEnum):
    FULL = "full"
    DELTA = "delta"


class DeltaAlgorithm(enum.StrEnum):
    BSDIFF4 = "bsdiff4"
    # zstd with the base image as a raw-content dictionary (like `zstd --patch-from`).
    ZSTD_DICT = "zstd-dict"


def check_id(kind: str, value: object) -> str:
    """A name or hardware id: 1-64 letters, digits, '_', '.', '-'; it ends up in file names."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise BundleError(
            f"invalid {kind} {value!r}: expected 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_version(kind: str, value: object) -> str:
    if not isinstance(value, str) or not _VERSION_RE.fullmatch(value):
        raise BundleError(f"invalid {kind} {value!r}: expected a version like 1.2.3 or 1.2.3-rc1")
    return value


def _version_key(version: str) -> tuple[tuple[int, ...], int, str]:
    check_version("version", version)
    core, _, pre = version.split("+", 1)[0].partition("-")
    numbers = tuple(int(p) for p in core.split("."))
    numbers += (0,) * (4 - len(numbers))
    # A pre-release sorts below its release (1.2.0-rc1 < 1.2.0); build metadata ("+...") does not count.
    return numbers, 0 if pre else 1, pre


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``."""
    ka, kb = _version_key(a), _version_key(b)
    return (ka > kb) - (ka < kb)


def _hex64(kind: str, value: object) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise BundleError(f"invalid {kind} {value!r}: expected 64 lowercase hex digits")
    return value


def _count(kind: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BundleError(f"invalid {kind} {value!r}: expected a non-negative integer")
    return value


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a bundle says about itself. ``payload_*`` always describe the resulting image."""

    name: str
    version: str
    hardware_id: str
    min_agent_version: str
    payload_sha256: str
    payload_length: int
    kind: BundleKind = BundleKind.FULL
    # Delta bundles only: the image the patch applies to, and how the patch was made.
    base_version: str = ""
    base_payload_sha256: str = ""
    algorithm: str = ""
    delta_sha256: str = ""
    delta_length: int = 0

    def __post_init__(self) -> None:
        check_id("name", self.name)
        check_version("version", self.version)
        check_id("hardware id", self.hardware_id)
        check_version("minimum agent version", self.min_agent_version)
        _hex64("payload sha256", self.payload_sha256)
        _count("payload length", self.payload_length)
        if self.kind is BundleKind.DELTA:
            check_version("base version", self.base_version)
            _hex64("base payload sha256", self.base_payload_sha256)
            _hex64("delta sha256", self.delta_sha256)
            _count("delta length", self.delta_length)
            if self.algorithm not in set(DeltaAlgorithm):
                raise BundleError(
                    f"unknown delta algorithm {self.algorithm!r}: expected one of "
                    f"{', '.join(a.value for a in DeltaAlgorithm)}"
                )
        elif self.base_version or self.base_payload_sha256 or self.algorithm or self.delta_sha256:
            raise BundleError("a full bundle carries no base_version, base_payload_sha256 or algorithm")

    @property
    def stored_length(self) -> int:
        """How many payload bytes follow the manifest in the file."""
        return self.delta_length if self.kind is BundleKind.DELTA else self.payload_length

    @property
    def stored_sha256(self) -> str:
        return self.delta_sha256 if self.kind is BundleKind.DELTA else self.payload_sha256

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "kind": self.kind.value,
            "name": self.name,
            "version": self.version,
            "hardware_id": self.hardware_id,
            "min_agent_version": self.min_agent_version,
            "payload_sha256": self.payload_sha256,
            "payload_length": self.payload_length,
        }
        if self.kind is BundleKind.DELTA:
            data |= {
                "base_version": self.base_version,
                "base_payload_sha256": self.base_payload_sha256,
                "algorithm": self.algorithm,
                "delta_sha256": self.delta_sha256,
                "delta_length": self.delta_length,
            }
        return data

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        if data.get("format") != FORMAT_VERSION:
            raise BundleError(f"manifest format {data.get('format')!r}: expected {FORMAT_VERSION}")
        try:
            kind = BundleKind(str(data.get("kind")))
        except ValueError:
            raise BundleError(f"manifest kind {data.get('kind')!r}: expected 'full' or 'delta'") from None
        known = set(cls.__dataclass_fields__) | {"format"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError(f"manifest has unknown fields {unknown}: expected only {sorted(known)}")
        fields = {k: v for k, v in data.items() if k not in {"format", "kind"}}
        try:
            return cls(kind=kind, **fields)
        except TypeError as e:
            raise BundleError(f"manifest is missing fields: {e}") from e

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"manifest is not UTF-8 JSON: {e}") from e
        if not isinstance(data, dict):
            raise BundleError(f"manifest: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    def custom(self) -> dict[str, Any]:
        """The TUF target custom fields that repeat this manifest (what the device compares)."""
        # The target's "kind" (firmware, firmware-delta) stands for the manifest's kind (full, delta).
        return {**self.to_dict(), "kind": "firmware" if self.kind is BundleKind.FULL else "firmware-delta"}


def check_matches_custom(manifest: Manifest, custom: Mapping[str, Any] | None) -> None:
    """Refuse a bundle whose manifest differs from what the signed target metadata says of it."""
    if not isinstance(custom, Mapping):
        raise BundleError("the signed target has no custom fields: expected the bundle's manifest there")
    expected = manifest.custom()
    for key, value in expected.items():
        if custom.get(key) != value:
            raise BundleError(
                f"bundle manifest {key}={value!r} differs from the signed target metadata "
                f"{key}={custom.get(key)!r}"
            )


def encode_bundle_header(manifest: Manifest) -> bytes:
    raw = manifest.to_bytes()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"manifest is {len(raw)} bytes: expected at most {MAX_MANIFEST_BYTES}")
    return _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(raw)) + raw


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(path: Path, manifest: Manifest, payload: bytes) -> Path:
    """Write a bundle file; the payload must be what the manifest pins."""
    if len(payload) != manifest.stored_length or sha256_bytes(payload) != manifest.stored_sha256:
        raise BundleError(
            f"payload does not match the manifest: expected {manifest.stored_length} bytes with sha256 "
            f"{manifest.stored_sha256}, got {len(payload)} bytes with sha256 {sha256_bytes(payload)}"
        )
    path.write_bytes(encode_bundle_header(manifest) + payload)
    return path


def read_manifest(f: BinaryIO) -> Manifest:
    """Read the header and manifest; leaves ``f`` at the first payload byte."""
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise BundleError(f"truncated bundle: {len(header)} header bytes, expected {_HEADER.size}")
    magic, fmt, _reserved, length = _HEADER.unpack(header)
    if magic != MAGIC:
        raise BundleError(f"not a firmware bundle: magic {magic!r}, expected {MAGIC!r}")
    if fmt != FORMAT_VERSION:
        raise BundleError(f"bundle format {fmt}: this reader knows {FORMAT_VERSION}")
    if length > MAX_MANIFEST_BYTES:
        raise BundleError(f"manifest claims {length} bytes: expected at most {MAX_MANIFEST_BYTES}")
    raw = f.read(length)
    if len(raw) != length:
        raise BundleError(f"truncated bundle: manifest has {len(raw)} of {length} bytes")
    return Manifest.from_bytes(raw)


def iter_payload(f: BinaryIO, manifest: Manifest) -> Iterator[bytes]:
    """Yield the stored payload in chunks, checking its length and sha256 as it goes.

    Raises :class:`BundleError` at the end when the bytes are not the ones the manifest
    pins (a partial bundle, extra bytes, or other bytes): a consumer must treat what it
    received as unusable until the iterator finishes without raising.
    """
    digest = hashlib.sha256()
    remaining = manifest.stored_length
    while remaining:
        chunk = f.read(min(_CHUNK, remaining))
        if not chunk:
            raise BundleError(
                f"partial bundle: payload ends {remaining} bytes short of {manifest.stored_length}"
            )
        digest.update(chunk)
        remaining -= len(chunk)
        yield chunk
    if f.read(1):
        raise BundleError("bundle has bytes after the payload the manifest pins")
    if digest.hexdigest() != manifest.stored_sha256:
        raise BundleError(
            f"bundle payload sha256 mismatch: expected {manifest.stored_sha256}, got {digest.hexdigest()}"
        )


def read_payload(path: Path) -> tuple[Manifest, bytes]:
    """Manifest and verified payload of a bundle file held in memory (small images, deltas)."""
    with path.open("rb") as f:
        manifest = read_manifest(f)
        return manifest, b"".join(iter_payload(f, manifest))
