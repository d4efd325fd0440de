"""Building firmware bundles and deltas (hub side and release tooling).

    full  = build_bundle(payload, name=..., version=..., hardware_id=..., min_agent_version=...)
    delta = build_delta(base_bundle, new_bundle)          # None when no delta is worth shipping

A delta is made only between two images of the same name and hardware, and only kept
when it is smaller than ``max_ratio`` of the full bundle: past that, shipping the full
image costs little more and saves the device a patch step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from firmware_images.delta import DeltaError, make_delta
from firmware_images.format import (
    BundleError,
    BundleKind,
    Manifest,
    compare_versions,
    encode_bundle_header,
    read_payload,
    sha256_bytes,
)

__all__ = ["Bundle", "build_bundle", "build_delta", "load_bundle"]

DEFAULT_MAX_DELTA_RATIO = 0.5


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle in memory: its manifest, the stored payload, and the whole file's bytes."""

    manifest: Manifest
    payload: bytes
    data: bytes

    @property
    def sha256(self) -> str:
        return sha256_bytes(self.data)

    @property
    def length(self) -> int:
        return len(self.data)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.data)
        return path

    def file_name(self) -> str:
        m = self.manifest
        if m.kind is BundleKind.DELTA:
            return f"{m.name}-{m.hardware_id}-{m.base_version}-to-{m.version}.efwd"
        return f"{m.name}-{m.hardware_id}-{m.version}.efw"


def _pack(manifest: Manifest, payload: bytes) -> Bundle:
    return Bundle(manifest, payload, encode_bundle_header(manifest) + payload)


def build_bundle(
    payload: bytes, *, name: str, version: str, hardware_id: str, min_agent_version: str = "0.1.0"
) -> Bundle:
    """A full bundle of ``payload``."""
    if not payload:
        raise BundleError("firmware payload is empty: expected the image bytes")
    manifest = Manifest(
        name=name,
        version=version,
        hardware_id=hardware_id,
        min_agent_version=min_agent_version,
        payload_sha256=sha256_bytes(payload),
        payload_length=len(payload),
    )
    return _pack(manifest, payload)


def load_bundle(path: Path) -> Bundle:
    manifest, payload = read_payload(path)
    return Bundle(manifest, payload, path.read_bytes())


def build_delta(
    base: Bundle,
    new: Bundle,
    *,
    algorithm: str = "auto",
    max_ratio: float = DEFAULT_MAX_DELTA_RATIO,
) -> Bundle | None:
    """A delta bundle that turns ``base``'s image into ``new``'s; None when it would not pay off."""
    b, n = base.manifest, new.manifest
    if b.kind is not BundleKind.FULL or n.kind is not BundleKind.FULL:
        raise DeltaError("deltas are made between two full bundles")
    if (b.name, b.hardware_id) != (n.name, n.hardware_id):
        raise DeltaError(
            f"cannot make a delta from {b.name}/{b.hardware_id} to {n.name}/{n.hardware_id}: "
            "expected the same image name and hardware"
        )
    if compare_versions(b.version, n.version) >= 0:
        raise DeltaError(f"cannot make a delta from {b.version} to {n.version}: expected a newer version")
    chosen, patch = make_delta(base.payload, new.payload, algorithm)
    if len(patch) > max_ratio * new.length:
        return None
    manifest = Manifest(
        name=n.name,
        version=n.version,
        hardware_id=n.hardware_id,
        min_agent_version=n.min_agent_version,
        payload_sha256=n.payload_sha256,
        payload_length=n.payload_length,
        kind=BundleKind.DELTA,
        base_version=b.version,
        base_payload_sha256=b.payload_sha256,
        algorithm=chosen,
        delta_sha256=sha256_bytes(patch),
        delta_length=len(patch),
    )
    return _pack(manifest, patch)
